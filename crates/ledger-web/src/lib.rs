//! The auditor's web pages: `/verify`, the offline evidence-package verifier, and
//! `/explorer`, a read-only browser of a ledger over its public REST API. `cledger serve`
//! serves both without authentication; `cledger verifier-page` writes the verifier to a file.
//!
//! This crate owns assembling the pages from their assets (`assets/`: the HTML templates,
//! `style.css`, the verification module `verify.mjs`, `report-view.js` that shows a report,
//! and each page's UI module), their Content-Security-Policy, and the routes that serve them. The verification itself is
//! JavaScript in the assets; nothing here interprets evidence.
//!
//! Each page is one self-contained HTML file, style and script inline, because:
//!
//! * the verifier must work offline — saved from the server or written by the CLI, opened
//!   from disk, with nothing to fetch (a `file://` page cannot load sibling modules anyway);
//! * inline code can still be locked down: the policy allows exactly the script and the style
//!   whose SHA-256 it names, and nothing else (`default-src 'none'`). The verifier's
//!   `connect-src 'none'` is what guarantees it makes no network request; the explorer may
//!   only call its own origin's API (`connect-src 'self'`). The policy is both in a `<meta>`
//!   element (so the file on disk is protected too) and, when served, in the
//!   `Content-Security-Policy` header, which alone can also forbid framing.
//!
//! Modules: `page` (assembly), `csp` (the policies), `routes` (serving).

mod csp;
mod page;
mod routes;

pub use page::{explorer_page, verifier_page};
pub use routes::routes;
