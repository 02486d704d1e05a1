//! `rgshield defences`: every defence with its knobs, defaults and guarantees (the syntax of
//! `--defence` in `serve`, `clone-eval` and `bench serve`).

use anyhow::Result;

/// Flags of `rgshield defences`.
#[derive(clap::Args)]
pub struct Args {
    /// Show only this defence.
    name: Option<String>,
}

/// Run `rgshield defences`.
pub fn run(a: &Args) -> Result<()> {
    let text = rgshield::defence::spec::describe_defences();
    match &a.name {
        None => print!("{text}"),
        Some(name) => {
            let params: rgshield::defence::DefenceParams = name.parse()?;
            let kind = params.kind();
            let block: String = text
                .split_inclusive('\n')
                .skip_while(|l| !l.starts_with(&format!("{kind}:")))
                .enumerate()
                .take_while(|(i, l)| *i == 0 || l.starts_with(' '))
                .map(|(_, l)| l)
                .collect();
            print!("{block}");
            println!("canonical: {params}");
        }
    }
    println!(
        "\nsyntax: --defence NAME[:key=value,...]; knobs left out take their defaults; \
         clone-eval sweeps a knob with key=v1|v2|..."
    );
    Ok(())
}
