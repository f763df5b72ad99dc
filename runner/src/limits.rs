//! What an app's instances may use (`limits set APP memory=512m cpus=1
//! pids=256`), applied by every runner; and sizes as people write them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Docker refuses less memory than this for a container.
const MIN_MEMORY: u64 = 6 * MIB;

/// A number of bytes, written as Docker's `--memory` takes it: a number with
/// an optional unit `k`, `m`, `g` or `t` (powers of 1024, `b` for bytes).
/// In nap.toml it may also be a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Why a size, a CPU count or a limit cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("invalid size {0:?}: write a number with an optional unit k, m, g or t, e.g. 512m")]
    Size(String),
    #[error("invalid CPU count {0:?}: write a number such as 1, 0.5 or 1.25")]
    Cpus(String),
    #[error("invalid process count {0:?}: write a whole number of at least 1")]
    Pids(String),
    #[error("memory={0} is too little: Docker needs at least 6m")]
    TooLittleMemory(ByteSize),
    #[error("malformed limit {0:?}: expected NAME=VALUE, such as memory=512m")]
    Malformed(String),
    #[error("unknown limit {0:?}: nap knows memory, cpus and pids")]
    Unknown(String),
}

impl FromStr for ByteSize {
    type Err = LimitsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || LimitsError::Size(text.to_owned());
        let lower = text.trim().to_ascii_lowercase();
        let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = match lower[digits.len()..].trim_end_matches("ib").trim_end_matches('b') {
            "" => 1,
            "k" => KIB,
            "m" => MIB,
            "g" => GIB,
            "t" => GIB * 1024,
            _ => return Err(bad()),
        };
        let number: u64 = digits.parse().map_err(|_| bad())?;
        number.checked_mul(unit).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    /// The shortest exact form: `1g`, `512m`, `100k` or bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, suffix) in [(GIB, "g"), (MIB, "m"), (KIB, "k")] {
            if bytes >= unit && bytes.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", bytes / unit);
            }
        }
        write!(f, "{bytes}")
    }
}

impl ByteSize {
    /// For people: `1.5 GiB`, `300.0 MiB`.
    #[expect(clippy::cast_precision_loss, reason = "one decimal is all that shows")]
    pub fn human(self) -> String {
        let bytes = self.0 as f64;
        match self.0 {
            b if b >= GIB => format!("{:.1} GiB", bytes / GIB as f64),
            b if b >= MIB => format!("{:.1} MiB", bytes / MIB as f64),
            b if b >= KIB => format!("{:.1} KiB", bytes / KIB as f64),
            b => format!("{b} bytes"),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Bytes(bytes) => Ok(ByteSize(bytes)),
            Written::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// CPUs, in thousandths: `1.5` is 1500, as Kubernetes' `1500m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpus(u32);

impl Cpus {
    pub fn millis(self) -> u32 {
        self.0
    }
}

impl FromStr for Cpus {
    type Err = LimitsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || LimitsError::Cpus(text.to_owned());
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() && fraction.is_empty()
            || fraction.len() > 3
            || !whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: u32 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        let fraction: u32 = format!("{fraction:0<3}").parse().map_err(|_| bad())?;
        let millis = whole.checked_mul(1000).and_then(|w| w.checked_add(fraction)).ok_or_else(bad)?;
        if millis == 0 {
            return Err(bad());
        }
        Ok(Cpus(millis))
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.0 / 1000, self.0 % 1000);
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            write!(f, "{whole}.{}", format!("{fraction:03}").trim_end_matches('0'))
        }
    }
}

impl Serialize for Cpus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The limits of every instance of an app. `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory, swap included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// Processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

/// A limit's name, as `limits set` and `limits unset` take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitName {
    Memory,
    Cpus,
    Pids,
}

impl FromStr for LimitName {
    type Err = LimitsError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "memory" => Ok(LimitName::Memory),
            "cpus" => Ok(LimitName::Cpus),
            "pids" => Ok(LimitName::Pids),
            _ => Err(LimitsError::Unknown(name.to_owned())),
        }
    }
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitName::Memory => "memory",
            LimitName::Cpus => "cpus",
            LimitName::Pids => "pids",
        })
    }
}

impl Limits {
    /// Sets one limit from `NAME=VALUE`.
    pub fn set(&mut self, pair: &str) -> Result<(), LimitsError> {
        let (name, value) = pair.split_once('=').ok_or_else(|| LimitsError::Malformed(pair.to_owned()))?;
        match name.parse()? {
            LimitName::Memory => {
                let memory: ByteSize = value.parse()?;
                if memory.0 < MIN_MEMORY {
                    return Err(LimitsError::TooLittleMemory(memory));
                }
                self.memory = Some(memory);
            }
            LimitName::Cpus => self.cpus = Some(value.parse()?),
            LimitName::Pids => {
                let pids = value.parse().ok().filter(|n| *n >= 1);
                self.pids = Some(pids.ok_or_else(|| LimitsError::Pids(value.to_owned()))?);
            }
        }
        Ok(())
    }

    /// Removes the limit `name`.
    pub fn unset(&mut self, name: LimitName) {
        match name {
            LimitName::Memory => self.memory = None,
            LimitName::Cpus => self.cpus = None,
            LimitName::Pids => self.pids = None,
        }
    }

    /// Whether `name` is set.
    pub fn has(&self, name: LimitName) -> bool {
        match name {
            LimitName::Memory => self.memory.is_some(),
            LimitName::Cpus => self.cpus.is_some(),
            LimitName::Pids => self.pids.is_some(),
        }
    }

    /// These limits with each one `set` has replaced.
    #[must_use]
    pub fn overlaid_with(self, set: Limits) -> Limits {
        Limits { memory: set.memory.or(self.memory), cpus: set.cpus.or(self.cpus), pids: set.pids.or(self.pids) }
    }

    /// `NAME=VALUE` of each limit set: memory, cpus, pids.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(memory) = self.memory {
            pairs.push(("memory", memory.to_string()));
        }
        if let Some(cpus) = self.cpus {
            pairs.push(("cpus", cpus.to_string()));
        }
        if let Some(pids) = self.pids {
            pairs.push(("pids", pids.to_string()));
        }
        pairs
    }

    /// The `docker run` flags that apply them (the systemd runner's units).
    pub fn docker_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(memory) = self.memory {
            flags.push(format!("--memory={}", memory.0));
            flags.push(format!("--memory-swap={}", memory.0));
        }
        if let Some(cpus) = self.cpus {
            flags.push(format!("--cpus={cpus}"));
        }
        if let Some(pids) = self.pids {
            flags.push(format!("--pids-limit={pids}"));
        }
        flags
    }

    /// Kubernetes' container `resources.limits` (pids are a node's setting
    /// there, not a container's).
    pub fn kubernetes(&self) -> Vec<(&'static str, String)> {
        let mut limits = Vec::new();
        if let Some(cpus) = self.cpus {
            limits.push(("cpu", format!("{}m", cpus.millis())));
        }
        if let Some(memory) = self.memory {
            limits.push(("memory", memory.0.to_string()));
        }
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::{ByteSize, Cpus, LimitName, Limits, LimitsError};

    #[test]
    fn sizes_read_as_docker_writes_them() {
        for (text, bytes) in [("512m", 512 << 20), ("1g", 1 << 30), ("1GiB", 1 << 30), ("100", 100), ("64K", 64 << 10)]
        {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in ["", "m", "1x", "-1m", "1.5g", "99999999999999t"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        assert_eq!(ByteSize(1 << 30).to_string(), "1g");
        assert_eq!(ByteSize(3 << 19).to_string(), "1536k");
        assert_eq!(ByteSize(3 << 29).human(), "1.5 GiB");
    }

    #[test]
    fn cpus_read_to_the_thousandth() {
        for (text, millis) in [("1", 1000), ("0.5", 500), ("1.25", 1250), (".1", 100)] {
            assert_eq!(text.parse::<Cpus>().map(Cpus::millis), Ok(millis), "{text}");
        }
        for bad in ["", "0", "0.0001", "1.2.3", "x", "-1", "."] {
            assert!(bad.parse::<Cpus>().is_err(), "{bad}");
        }
        assert_eq!("1.250".parse::<Cpus>().map(|c| c.to_string()), Ok("1.25".to_owned()));
    }

    #[test]
    fn limits_set_unset_and_render() {
        let mut limits = Limits::default();
        for pair in ["memory=512m", "cpus=1.5", "pids=256"] {
            limits.set(pair).unwrap();
        }
        assert_eq!(
            limits.docker_flags(),
            ["--memory=536870912", "--memory-swap=536870912", "--cpus=1.5", "--pids-limit=256"]
        );
        assert_eq!(limits.kubernetes(), [("cpu", "1500m".to_owned()), ("memory", "536870912".to_owned())]);
        let json = serde_json::to_string(&limits).unwrap();
        assert_eq!(json, r#"{"memory":"512m","cpus":"1.5","pids":256}"#);
        assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), limits);
        limits.unset(LimitName::Cpus);
        assert!(!limits.has(LimitName::Cpus));
        assert_eq!(limits.set("memory=1m"), Err(LimitsError::TooLittleMemory(ByteSize(1 << 20))));
        assert_eq!(limits.set("disk=1g"), Err(LimitsError::Unknown("disk".into())));
        assert_eq!(limits.set("pids=0"), Err(LimitsError::Pids("0".into())));
        assert_eq!(limits.set("memory"), Err(LimitsError::Malformed("memory".into())));
    }
}
