//! `--compress`: how a pairwise exchange's snapshot travels (docs/algorithm.md §9.3).
use std::fmt;
use std::str::FromStr;

/// How the parameters of a pairwise exchange go on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// f32, bit for bit.
    #[default]
    None,
    /// IEEE half precision, two values per 4 bytes: half the bytes. Both peers average the
    /// rounded values, so the pair's sum is conserved.
    Fp16,
    /// PowerGossip's low-rank differences of rank R (the engine's `compress` module).
    LowRank(usize),
}

impl Compression {
    /// Floats on the wire for `d` parameters (fp16 packs two halves in each f32 slot). For
    /// `lowrank:R` it depends on the model's tensors: the runtime computes it from their plan
    /// (this says `d`).
    pub fn wire_len(self, d: usize) -> usize {
        match self {
            Compression::None | Compression::LowRank(_) => d,
            Compression::Fp16 => d.div_ceil(2),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Fp16 => f.write_str("fp16"),
            Compression::LowRank(r) => write!(f, "lowrank:{r}"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("--compress `{s}`: expected none, fp16 or lowrank:R with R >= 1");
        match s {
            "none" => Ok(Compression::None),
            "fp16" => Ok(Compression::Fp16),
            _ => match s.strip_prefix("lowrank:").map(str::parse::<usize>) {
                Some(Ok(r)) if r >= 1 => Ok(Compression::LowRank(r)),
                _ => Err(bad()),
            },
        }
    }
}

impl serde::Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_and_bad_ones_say_what_is_expected() {
        for c in [
            Compression::None,
            Compression::Fp16,
            Compression::LowRank(4),
        ] {
            assert_eq!(c.to_string().parse::<Compression>(), Ok(c));
        }
        for bad in ["fp8", "lowrank:0", "lowrank:x", "lowrank"] {
            let e = bad.parse::<Compression>().unwrap_err();
            assert!(
                e.contains("none, fp16 or lowrank:R") && e.contains(bad),
                "{e}"
            );
        }
        assert_eq!(Compression::Fp16.wire_len(5), 3);
        assert_eq!(Compression::None.wire_len(5), 5);
    }
}
