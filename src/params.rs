//! One pattern for every set of settings, after linfa's `ParamGuard`: a plain `XParams` struct
//! whose `Default` holds the documented defaults (defined once, there), [`Params::check`] that
//! turns it into [`Valid<XParams>`], and algorithms that take only the checked form — so every
//! domain check runs once, before any work, and no algorithm meets an unchecked value.

use std::ops::Deref;

use serde::Serialize;

use crate::error::Result;

/// Settings that passed [`Params::check`]. Only `check` implementations build one; it
/// dereferences to the settings and serialises as them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Valid<P>(P);

impl<P> Valid<P> {
    /// Wrap settings whose checks have just passed (for `check` implementations only).
    pub(crate) fn checked(p: P) -> Self {
        Valid(p)
    }

    /// The settings, to change and check again.
    pub fn into_inner(self) -> P {
        self.0
    }
}

/// Settings read back from a file are checked again: a `Valid` is never built around values that
/// fail [`Params::check`].
impl<'de, P: Params + serde::Deserialize<'de>> serde::Deserialize<'de> for Valid<P> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        P::deserialize(d)?.check().map_err(serde::de::Error::custom)
    }
}

impl<P> Deref for Valid<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.0
    }
}

/// Settings with a domain check.
pub trait Params: Sized {
    /// Check every value's domain; the error names the field and the value.
    fn check(self) -> Result<Valid<Self>>;
}
