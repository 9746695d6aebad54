//! Value parsers for numeric flags: counts that must be positive and sampling parameters that
//! must be finite and in range. A bad value is a usage error (exit 2) naming the flag.

/// A count of at least 1 (`--max-tokens`, `--calib-samples`, ...).
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A byte count of at least 1 (`--size-budget`).
pub fn positive_bytes(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn finite(s: &str) -> Result<f32, String> {
    let v: f32 = s
        .parse()
        .map_err(|e: std::num::ParseFloatError| e.to_string())?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err("must be a finite number".into())
    }
}

/// A finite number >= 0 (`--temperature`).
pub fn non_negative(s: &str) -> Result<f32, String> {
    match finite(s)? {
        v if v >= 0.0 => Ok(v),
        _ => Err("must be 0 or more".into()),
    }
}

/// A finite number > 0 (`--repeat-penalty`).
pub fn positive_f32(s: &str) -> Result<f32, String> {
    match finite(s)? {
        v if v > 0.0 => Ok(v),
        _ => Err("must be more than 0".into()),
    }
}

/// A probability in [0, 1] (`--min-p`).
pub fn unit(s: &str) -> Result<f32, String> {
    match finite(s)? {
        v if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("must be between 0 and 1".into()),
    }
}

/// A probability in (0, 1] (`--top-p`).
pub fn open_unit(s: &str) -> Result<f32, String> {
    match finite(s)? {
        v if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err("must be more than 0 and at most 1".into()),
    }
}

/// Most threads `--threads` accepts.
pub const MAX_THREADS: usize = 1024;

/// A thread count, 1 to [`MAX_THREADS`] (`--threads`).
pub fn threads(s: &str) -> Result<usize, String> {
    match positive(s)? {
        n if n <= MAX_THREADS => Ok(n),
        _ => Err(format!("must be at most {MAX_THREADS}")),
    }
}

/// Longest duration a flag accepts, in seconds (about 30 years).
const MAX_SECONDS: f64 = 1e9;

/// A duration in seconds, more than 0 and at most [`MAX_SECONDS`] (`--stall-timeout`).
pub fn positive_seconds(s: &str) -> Result<f64, String> {
    match finite(s)? {
        v if v > 0.0 && f64::from(v) <= MAX_SECONDS => Ok(f64::from(v)),
        _ => Err(format!(
            "must be more than 0 and at most {MAX_SECONDS} seconds"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(positive("0").is_err() && positive("-1").is_err() && positive("3") == Ok(3));
        for bad in ["nan", "inf", "-inf", "-0.5"] {
            assert!(non_negative(bad).is_err(), "{bad}");
        }
        assert!(positive_f32("0").is_err() && positive_f32("1.1").is_ok());
        assert!(unit("1.5").is_err() && unit("0").is_ok());
        assert!(open_unit("0").is_err() && open_unit("1").is_ok() && open_unit("NaN").is_err());
        assert!(threads("0").is_err() && threads("1025").is_err() && threads("4") == Ok(4));
    }
}
