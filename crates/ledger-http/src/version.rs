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
    /// The newest stable version: how a request to one of CCF's own routes, which CCF's
    /// tools send without `api-version`, is served.
    pub const LATEST: ApiVersion = ApiVersion::V2026_02_23;

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

    /// Whether a write made with this version records a `LedgerEntryV1` application claim,
    /// and whether a `/receipt` requested with it shows `applicationClaims` (acl-api.md §2.9:
    /// only `2023-01-18-preview` and versions from the `2026-02-23` stable on).
    pub fn has_application_claims(self) -> bool {
        matches!(self, ApiVersion::V2023_01_18Preview) || self >= ApiVersion::V2026_02_23
    }

    /// The item member of a `GET /app/users` page, or `None` if the version has no such
    /// operation (acl-api.md §2.5): `users` in 2024-01-26-preview (and the unused
    /// 2024-07-26-preview), `ledgerUsers` from 2024-08-22-preview on.
    pub fn users_list_key(self) -> Option<&'static str> {
        match self {
            ApiVersion::V2024_01_26Preview | ApiVersion::V2024_07_26Preview => Some("users"),
            v if v >= ApiVersion::V2024_08_22Preview => Some("ledgerUsers"),
            _ => None,
        }
    }

    /// Tags on write, the `tag` filter and `GET /app/collections/tags` (acl-api.md §2.8).
    pub fn has_tags(self) -> bool {
        self >= ApiVersion::V2024_12_09Preview
    }

    /// `/app/ledgerUsers` (multi-role users, acl-api.md §2.5).
    pub fn has_ledger_users(self) -> bool {
        self >= ApiVersion::V2024_12_09Preview
    }

    /// User-defined endpoints, runtime options, modules and roles (2024-08-22-preview on).
    pub fn has_user_defined_endpoints(self) -> bool {
        self >= ApiVersion::V2024_08_22Preview
    }

    /// User-defined functions (2024-12-09-preview on).
    pub fn has_user_defined_functions(self) -> bool {
        self >= ApiVersion::V2024_12_09Preview
    }

    /// Fails with 404 `ResourceNotFound` naming `operation` and the first version that
    /// has it, unless `available`.
    pub fn require(self, available: bool, operation: &str, since: &str) -> Result<(), ApiError> {
        if available {
            Ok(())
        } else {
            Err(ApiError::OperationNotInVersion(format!(
                "{operation} does not exist in api-version {}; it needs api-version {since} or later.",
                self.as_str()
            )))
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

    #[test]
    fn feature_gates() {
        use ApiVersion::*;
        let claims: Vec<_> = ApiVersion::ALL
            .into_iter()
            .filter(|v| v.has_application_claims())
            .collect();
        assert_eq!(
            claims,
            [V2023_01_18Preview, V2026_02_23, V2026_07_31Preview]
        );
        assert_eq!(V2022_05_13.users_list_key(), None);
        assert_eq!(V2024_01_26Preview.users_list_key(), Some("users"));
        assert_eq!(V2024_08_22Preview.users_list_key(), Some("ledgerUsers"));
        assert_eq!(V2026_02_23.users_list_key(), Some("ledgerUsers"));
        assert!(!V2024_08_22Preview.has_tags() && V2024_12_09Preview.has_tags());
    }
}
