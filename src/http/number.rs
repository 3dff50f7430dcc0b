//! JSON numbers as JSON Schema reads them: `461.0` is an integer there (and so in the
//! OpenAPI document), while serde refuses it for an integer field. These accept any
//! number with no fractional part that fits.

use serde::{Deserialize, Deserializer, de::Error};

fn integral<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(v) = n.as_u64() {
        return Ok(v);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => Ok(f as u64),
        _ => Err(D::Error::custom(format!("expected a whole number of at least 0, got {n}"))),
    }
}

/// A `u32` field.
pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = integral(d)?;
    u32::try_from(v).map_err(|_| D::Error::custom(format!("{v} is too large")))
}

/// A `u16` field (a port).
pub fn u16<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = integral(d)?;
    u16::try_from(v).map_err(|_| D::Error::custom(format!("{v} is too large")))
}

/// An optional `u16` field (`null` or absent: `None`).
pub fn opt_u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    struct Port(#[serde(deserialize_with = "u16")] u16);
    Ok(Option::<Port>::deserialize(d)?.map(|p| p.0))
}

/// An optional `u64` field (`null` or absent: `None`).
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "integral")] u64);
    Ok(Option::<Whole>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::u32")]
        n: u32,
        #[serde(default, deserialize_with = "super::opt_u64")]
        limit: Option<u64>,
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_not() {
        let b: Body = serde_json::from_str(r#"{"n": 461.0, "limit": 10}"#).unwrap();
        assert_eq!((b.n, b.limit), (461, Some(10)));
        let b: Body = serde_json::from_str(r#"{"n": 1, "limit": null}"#).unwrap();
        assert_eq!(b.limit, None);
        assert!(serde_json::from_str::<Body>(r#"{"n": 1.5}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"n": -1}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"n": 5000000000}"#).is_err());
    }
}
