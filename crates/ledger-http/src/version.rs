//! The `api-version` query parameter: which versions exist, and which wire shapes depend on it.
//!
//! Every ACL version published or referenced in the specs is accepted (acl-api.md §1.2) and
//! routed by path; only shape differences are gated here, so a handler asks a question
//! ("which key names the next link?") rather than comparing version strings.

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiVersion {
    V0_1Preview,
    V2022_04_20Preview,
    V2022_05_13,
    V2022_07_12,
    V2022_08_13,
    V2022_11_23,
    V2023_01_18Preview,
    V2023_06_01Preview,
    V2024_01_26Preview,
    V2024_07_26Preview,
    V2024_08_22Preview,
    V2024_12_09Preview,
    V2026_02_23,
    V2026_07_31Preview,
}

impl ApiVersion {
    pub const ALL: [ApiVersion; 14] = [
        ApiVersion::V0_1Preview,
        ApiVersion::V2022_04_20Preview,
        ApiVersion::V2022_05_13,
        ApiVersion::V2022_07_12,
        ApiVersion::V2022_08_13,
        ApiVersion::V2022_11_23,
        ApiVersion::V2023_01_18Preview,
        ApiVersion::V2023_06_01Preview,
        ApiVersion::V2024_01_26Preview,
        ApiVersion::V2024_07_26Preview,
        ApiVersion::V2024_08_22Preview,
        ApiVersion::V2024_12_09Preview,
        ApiVersion::V2026_02_23,
        ApiVersion::V2026_07_31Preview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V0_1Preview => "0.1-preview",
            ApiVersion::V2022_04_20Preview => "2022-04-20-preview",
            ApiVersion::V2022_05_13 => "2022-05-13",
            ApiVersion::V2022_07_12 => "2022-07-12",
            ApiVersion::V2022_08_13 => "2022-08-13",
            ApiVersion::V2022_11_23 => "2022-11-23",
            ApiVersion::V2023_01_18Preview => "2023-01-18-preview",
            ApiVersion::V2023_06_01Preview => "2023-06-01-preview",
            ApiVersion::V2024_01_26Preview => "2024-01-26-preview",
            ApiVersion::V2024_07_26Preview => "2024-07-26-preview",
            ApiVersion::V2024_08_22Preview => "2024-08-22-preview",
            ApiVersion::V2024_12_09Preview => "2024-12-09-preview",
            ApiVersion::V2026_02_23 => "2026-02-23",
            ApiVersion::V2026_07_31Preview => "2026-07-31-preview",
        }
    }

    /// Parses the (already percent-decoded) `api-version` value; `None` means it was absent.
    pub fn from_query(value: Option<&str>) -> Result<ApiVersion, ApiError> {
        let value = value.ok_or(ApiError::MissingApiVersion)?;
        ApiVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == value)
            .ok_or_else(|| ApiError::UnsupportedApiVersion(value.to_owned()))
    }

    /// The member naming the next page: `@nextLink` in the two oldest previews (acl-api.md §2.4).
    pub fn next_link_key(self) -> &'static str {
        match self {
            ApiVersion::V0_1Preview | ApiVersion::V2022_04_20Preview => "@nextLink",
            _ => "nextLink",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_version() {
        for v in ApiVersion::ALL {
            assert_eq!(ApiVersion::from_query(Some(v.as_str())), Ok(v));
        }
        assert_eq!(
            ApiVersion::from_query(None),
            Err(ApiError::MissingApiVersion)
        );
        assert!(matches!(
            ApiVersion::from_query(Some("2022-05-14")),
            Err(ApiError::UnsupportedApiVersion(_))
        ));
    }
}
