//! `rgshield keys`: the API keys of `serve --api-keys`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use rgshield::guard::accounts::{ClientEntry, KeyFile};

/// Subcommands of `rgshield keys`.
#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Create a client's key: print it once, store only its SHA-256 in FILE (created when
    /// missing; rewritten atomically).
    New(NewArgs),
    /// List the clients of a key file with their limits (never keys).
    List(ListArgs),
}

/// Flags of `rgshield keys new`.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The key file.
    #[arg(long)]
    file: PathBuf,
    /// The client's name (unique in the file).
    #[arg(long)]
    name: String,
    /// Most queries (inputs) over the key's lifetime; default unlimited.
    #[arg(long)]
    quota: Option<u64>,
    /// Queries per second (a token bucket); default unlimited.
    #[arg(long)]
    rate: Option<f64>,
    /// Largest burst of queries (the bucket's capacity); default max(1, ⌈rate⌉).
    #[arg(long, requires = "rate")]
    burst: Option<f64>,
    /// The key may call the admin endpoints (/v1/admin/usage, /v1/admin/alerts).
    #[arg(long)]
    admin: bool,
}

/// Flags of `rgshield keys list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// The key file.
    #[arg(long)]
    file: PathBuf,
}

impl From<&NewArgs> for ClientEntry {
    fn from(a: &NewArgs) -> Self {
        ClientEntry {
            name: a.name.clone(),
            sha256: String::new(),
            quota: a.quota,
            rate: a.rate,
            burst: a.burst,
            admin: a.admin,
        }
    }
}

/// Run `rgshield keys …`.
pub fn run(c: &Cmd) -> Result<()> {
    match c {
        Cmd::New(a) => {
            let mut f = KeyFile::load_or_empty(&a.file)?;
            let key = f.add(ClientEntry::from(a), &a.file)?;
            f.save(&a.file)
                .with_context(|| format!("writing the key file {}", a.file.display()))?;
            eprintln!(
                "added client '{}' to {}; its key is printed once, below, and stored nowhere:",
                a.name,
                a.file.display()
            );
            println!("{key}");
        }
        Cmd::List(a) => {
            let f = KeyFile::load(&a.file)?;
            for c in &f.clients {
                let opt = |v: Option<String>| v.unwrap_or_else(|| "unlimited".into());
                println!(
                    "{}\tquota {}\trate {}\tburst {}{}",
                    c.name,
                    opt(c.quota.map(|q| q.to_string())),
                    opt(c.rate.map(|r| format!("{r}/s"))),
                    opt(c.capacity().map(|b| b.to_string())),
                    if c.admin { "\tadmin" } else { "" }
                );
            }
        }
    }
    Ok(())
}
