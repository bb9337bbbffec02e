//! The async side of the client: the few operations a load generator or an async service
//! needs, with the same pinning and receipt verification as the blocking [`crate::Client`].
//!
//! One [`Client`] holds one connection pool; over HTTP/2 (chosen by ALPN) all its concurrent
//! requests share one TLS connection. A caller that wants N connections makes N clients.

use crate::{
    Appended, Auth, ClientConfig, Entry, HttpVersion, Result, Step, VerifiedReceiptResponse, base,
    decode, field, next_step, tls_material, url, verified,
};
use ledger_core::receipt::ReceiptResponse;
use reqwest::Method;
use serde_json::{Value, json};

pub struct Client {
    http: reqwest::Client,
    base: String,
    config: ClientConfig,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client> {
        let base = base(&config.endpoint)?;
        let (root, identity) = tls_material(&config)?;
        // Redirects are followed by `call_with_headers`, as in the blocking client.
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([root])
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout);
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        if config.http_version == HttpVersion::Http1 {
            builder = builder.http1_only();
        }
        Ok(Client {
            http: builder.build()?,
            base,
            config,
        })
    }

    async fn call(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Value> {
        Ok(self.call_with_headers(method, url, body).await?.1)
    }

    async fn call_with_headers(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(reqwest::header::HeaderMap, Value)> {
        // Follows `307`/`308` and retries `503` + `Retry-After` like the blocking client.
        let start = std::time::Instant::now();
        let body = body.map(Value::to_string);
        let mut target = url.to_owned();
        let mut hops = 0;
        loop {
            let mut req = self.http.request(method.clone(), &target);
            if let Auth::Token(token) = &self.config.auth {
                req = req.bearer_auth(token);
            }
            if let Some(body) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(body.clone());
            }
            let resp = req.send().await?;
            let status = resp.status();
            match next_step(
                status,
                resp.headers(),
                &target,
                hops,
                start.elapsed(),
                self.config.retry_unavailable,
            )? {
                Step::Follow(next) => {
                    hops += 1;
                    target = next;
                }
                Step::Retry(delay) => {
                    tokio::time::sleep(delay).await;
                    hops = 0;
                    target = url.to_owned();
                }
                Step::Answer => {
                    let headers = resp.headers().clone();
                    let text = resp.text().await?;
                    return decode(status, headers, &text);
                }
            }
        }
    }

    fn url(&self, path: &str, params: &[(&str, Option<&str>)]) -> String {
        url(&self.base, path, &self.config.api_version, params)
    }

    /// `POST /app/transactions`. cledger answers a write only once it is committed, so the
    /// returned transaction is `Committed`; against a server that answers earlier (Azure
    /// confidential ledger), poll `status` before relying on it.
    pub async fn post_entry(&self, contents: &str, collection: Option<&str>) -> Result<Appended> {
        let url = self.url("/app/transactions", &[("collectionId", collection)]);
        self.write(&url, &json!({"contents": contents}), collection)
            .await
    }

    /// POSTs a write to `url` (a `/app/transactions` URL) and reads what the answer names.
    async fn write(&self, url: &str, entry: &Value, collection: Option<&str>) -> Result<Appended> {
        let (headers, body) = self
            .call_with_headers(Method::POST, url, Some(entry))
            .await?;
        Appended::from_answer(&headers, &body, collection)
    }

    pub async fn get_entry(&self, txid: &str, collection: Option<&str>) -> Result<Entry> {
        let url = self.url(
            &format!("/app/transactions/{}", crate::enc(txid)),
            &[("collectionId", collection)],
        );
        field(
            self.call(Method::GET, &url, None).await?["entry"].take(),
            "entry",
        )
    }

    /// Fetches a `Ready` receipt and verifies it (see [`crate::Client::receipt`]); a receipt
    /// that is still `Loading` is a [`crate::Error::Protocol`] error here (no waiting).
    pub async fn receipt(&self, txid: &str) -> Result<VerifiedReceiptResponse> {
        let response = self.receipt_unverified(txid).await?;
        verified(response, &self.config.service_cert_pem, txid)
    }

    /// Fetches a receipt without checking it (for measuring the server alone).
    pub async fn receipt_unverified(&self, txid: &str) -> Result<ReceiptResponse> {
        let url = self.url(
            &format!("/app/transactions/{}/receipt", crate::enc(txid)),
            &[],
        );
        field(self.call(Method::GET, &url, None).await?, "receipt")
    }

    /// The transaction id of the newest entry of the default collection.
    pub async fn current_txid(&self) -> Result<String> {
        let url = self.url("/app/transactions/current", &[]);
        let entry: Entry = field(self.call(Method::GET, &url, None).await?, "entry")?;
        Ok(entry.transaction_id)
    }

    /// One page of `GET /app/transactions` for a range of a collection.
    pub async fn list_page(
        &self,
        collection: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<Entry>> {
        let url = self.url(
            "/app/transactions",
            &[
                ("collectionId", collection),
                ("fromTransactionId", Some(from)),
                ("toTransactionId", Some(to)),
            ],
        );
        field(
            self.call(Method::GET, &url, None).await?["entries"].take(),
            "entries",
        )
    }

    /// `PUT /app/userDefinedFunctions/{id}` (api-version 2024-12-09-preview): creates or
    /// replaces a user-defined function. Needs an administrator.
    pub async fn put_function(&self, id: &str, code: &str) -> Result<()> {
        let url = url(
            &self.base,
            &format!("/app/userDefinedFunctions/{}", crate::enc(id)),
            FUNCTIONS_API_VERSION,
            &[],
        );
        self.call(Method::PUT, &url, Some(&json!({"code": code})))
            .await
            .map(drop)
    }

    /// `POST /app/userDefinedFunctions/{id}:execute` with `arguments`: the execution's answer
    /// (`status`, `result` or `error`, `logs`).
    pub async fn execute_function(&self, id: &str, arguments: &[&str]) -> Result<Value> {
        let url = url(
            &self.base,
            &format!("/app/userDefinedFunctions/{}:execute", crate::enc(id)),
            FUNCTIONS_API_VERSION,
            &[],
        );
        self.call(Method::POST, &url, Some(&json!({"arguments": arguments})))
            .await
    }

    /// `POST /app/transactions` with the functions `pre_hooks` run as pre-hooks (api-version
    /// 2024-12-09-preview); answered once committed, like [`Client::post_entry`].
    pub async fn post_entry_with_hooks(
        &self,
        contents: &str,
        collection: Option<&str>,
        pre_hooks: &[&str],
    ) -> Result<Appended> {
        let url = url(
            &self.base,
            "/app/transactions",
            FUNCTIONS_API_VERSION,
            &[("collectionId", collection)],
        );
        let hooks: Vec<Value> = pre_hooks
            .iter()
            .map(|id| json!({"functionId": id}))
            .collect();
        self.write(
            &url,
            &json!({"contents": contents, "preHooks": hooks}),
            collection,
        )
        .await
    }
}

/// The first api-version with user-defined functions and hooks.
pub(crate) const FUNCTIONS_API_VERSION: &str = "2024-12-09-preview";
