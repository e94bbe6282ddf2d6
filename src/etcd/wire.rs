//! etcd's JSON gateway answers as private serde types, turned into the store's words at
//! this edge. A missing or malformed field is a `DecodeError` that quotes the answer.
//!
//! The gateway omits zero, false and empty fields (an empty range has no `kvs`, a failed
//! txn no `succeeded`, `more` comes only when true, `lease` only when set), so those
//! default. What every answer of its kind carries (`header`, a grant's `ID`, a
//! keepalive's `result`, a token) is required. int64 arrive as JSON strings.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;

use super::codec;
use super::codes::Code;
use crate::store::{Kv, LeaseTtl};

/// How much of an answer a decode error quotes.
const QUOTE: usize = 200;

/// An answer without the shape etcd gives it, with the text that shows it.
#[derive(Debug)]
pub(crate) struct DecodeError {
    problem: String,
    /// The answer, or the part of it around the problem.
    quote: String,
}

impl DecodeError {
    fn new(problem: impl Into<String>, quote: String) -> DecodeError {
        DecodeError {
            problem: problem.into(),
            quote,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {:?}", self.problem, self.quote)
    }
}

impl std::error::Error for DecodeError {}

/// At most `QUOTE` bytes of `text` around byte `at`, with `...` where it was cut.
pub(crate) fn snippet(text: &str, at: usize) -> String {
    if text.len() <= QUOTE {
        return text.to_string();
    }
    let floor = |mut i: usize| {
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(at.saturating_sub(QUOTE / 2).min(text.len() - QUOTE));
    let end = floor(start + QUOTE);
    let head = if start > 0 { "..." } else { "" };
    let tail = if end < text.len() { "..." } else { "" };
    format!("{head}{}{tail}", &text[start..end])
}

/// Parses an answer, quoting the part of it where serde stopped.
fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| {
        // serde_json counts lines from 1 and bytes within a line from 1.
        let before: usize = text
            .split_inclusive('\n')
            .take(e.line().saturating_sub(1))
            .map(str::len)
            .sum();
        DecodeError::new(e.to_string(), snippet(text, before + e.column()))
    })
}

/// Why `text` is not JSON at all (an answer from a proxy, not from etcd), if it is not.
pub(crate) fn not_json(text: &str) -> Option<serde_json::Error> {
    serde_json::from_str::<IgnoredAny>(text).err()
}

/// An int64 as the gateway sends it (a JSON string), or as a JSON number.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Int64;
    impl Visitor<'_> for Int64 {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an int64 as a string or a number")
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<i64, E> {
            Ok(n)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<i64, E> {
            i64::try_from(n).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<i64, E> {
            s.parse()
                .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))
        }
    }
    d.deserialize_any(Int64)
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Code, D::Error> {
        int64(d).map(Code::from)
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
    #[serde(default, deserialize_with = "int64")]
    raft_term: i64,
}

#[derive(Deserialize)]
struct WireKv {
    key: String,
    /// An empty value is omitted.
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int64")]
    lease: i64,
}

impl WireKv {
    fn into_kv(self) -> Result<Kv, DecodeError> {
        Ok(Kv {
            key: base64_text("key", &self.key)?,
            value: base64_text("value", &self.value)?,
            lease: self.lease,
        })
    }
}

/// The UTF-8 text a base64 field holds.
fn base64_text(field: &str, b64: &str) -> Result<String, DecodeError> {
    let bytes = codec::decode(b64)
        .map_err(|e| DecodeError::new(format!("{field} is not base64 ({e})"), snippet(b64, 0)))?;
    String::from_utf8(bytes)
        .map_err(|_| DecodeError::new(format!("{field} is not UTF-8"), snippet(b64, 0)))
}

fn into_kvs(kvs: Vec<WireKv>) -> Result<Vec<Kv>, DecodeError> {
    kvs.into_iter().map(WireKv::into_kv).collect()
}

#[derive(Deserialize)]
struct RangeAnswer {
    header: Header,
    #[serde(default)]
    kvs: Vec<WireKv>,
    #[serde(default)]
    more: bool,
}

/// One page of a range read.
#[derive(Debug)]
pub(crate) struct Page {
    pub kvs: Vec<Kv>,
    /// The revision the page was read at.
    pub revision: i64,
    /// More keys follow in the range.
    pub more: bool,
}

/// The answer to `/kv/range`.
pub(crate) fn range(text: &str) -> Result<Page, DecodeError> {
    let a: RangeAnswer = parse(text)?;
    Ok(Page {
        kvs: into_kvs(a.kvs)?,
        revision: a.header.revision,
        more: a.more,
    })
}

#[derive(Deserialize)]
struct TxnAnswer {
    #[serde(rename = "header")]
    _header: IgnoredAny,
    /// Absent when a compare failed.
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<TxnResponse>,
}

/// One answer inside a txn's; only ranges are read.
#[derive(Deserialize)]
struct TxnResponse {
    response_range: Option<RangeBody>,
}

#[derive(Deserialize)]
struct RangeBody {
    #[serde(default)]
    kvs: Vec<WireKv>,
}

/// The answer to `/kv/txn`: whether its compares held.
pub(crate) fn txn(text: &str) -> Result<bool, DecodeError> {
    parse::<TxnAnswer>(text).map(|a| a.succeeded)
}

/// The answer to a txn of `n` range requests and no compares: every key they read.
pub(crate) fn txn_ranges(text: &str, n: usize) -> Result<Vec<Kv>, DecodeError> {
    let a: TxnAnswer = parse(text)?;
    if a.responses.len() != n {
        let problem = format!("{} answers to {n} range requests", a.responses.len());
        return Err(DecodeError::new(problem, snippet(text, 0)));
    }
    let mut out = Vec::new();
    for (i, r) in a.responses.into_iter().enumerate() {
        let Some(range) = r.response_range else {
            let problem = format!("answer {i} is not a response_range");
            return Err(DecodeError::new(problem, snippet(text, 0)));
        };
        out.extend(into_kvs(range.kvs)?);
    }
    Ok(out)
}

#[derive(Deserialize)]
struct GrantAnswer {
    #[serde(rename = "header")]
    _header: IgnoredAny,
    #[serde(rename = "ID", deserialize_with = "int64")]
    id: i64,
}

/// The answer to `/lease/grant`: the new lease's ID.
pub(crate) fn grant(text: &str) -> Result<i64, DecodeError> {
    match parse::<GrantAnswer>(text)?.id {
        0 => Err(DecodeError::new("lease ID 0", snippet(text, 0))),
        id => Ok(id),
    }
}

#[derive(Deserialize)]
struct KeepAliveAnswer {
    result: KeepAliveResult,
}

#[derive(Deserialize)]
struct KeepAliveResult {
    #[serde(rename = "header")]
    _header: IgnoredAny,
    /// Absent (0) when the lease is expired or unknown: the gateway still answers 200.
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    ttl: i64,
}

/// The answer to `/lease/keepalive`: the lease's new TTL, None when it is gone.
pub(crate) fn keepalive(text: &str) -> Result<Option<i64>, DecodeError> {
    let ttl = parse::<KeepAliveAnswer>(text)?.result.ttl;
    Ok((ttl > 0).then_some(ttl))
}

#[derive(Deserialize)]
struct RevokeAnswer {
    #[serde(rename = "header")]
    _header: IgnoredAny,
}

/// The answer to `/lease/revoke`: nothing to read but that it is one.
pub(crate) fn revoke(text: &str) -> Result<(), DecodeError> {
    parse::<RevokeAnswer>(text).map(|_| ())
}

#[derive(Deserialize)]
struct TimeToLiveAnswer {
    header: Header,
    /// -1 when the lease is expired or unknown; absent (0) in its last second.
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    ttl: i64,
    /// Absent (0) when the lease is gone.
    #[serde(rename = "grantedTTL", default, deserialize_with = "int64")]
    granted: i64,
    #[serde(default)]
    keys: Vec<String>,
}

/// The answer to `/lease/timetolive`: seconds left (rounded down: 0 in the last second)
/// and the granted TTL; None when the lease is gone (`TTL` -1).
pub(crate) fn time_to_live(text: &str) -> Result<Option<LeaseTtl>, DecodeError> {
    let a: TimeToLiveAnswer = parse(text)?;
    if a.ttl < 0 {
        return Ok(None);
    }
    if a.granted <= 0 {
        return Err(DecodeError::new(
            "a live lease without grantedTTL",
            snippet(text, 0),
        ));
    }
    Ok(Some(LeaseTtl {
        remaining: a.ttl,
        granted: a.granted,
        term: u64::try_from(a.header.raft_term).unwrap_or(0),
    }))
}

/// The answer to `/lease/timetolive` with keys: the keys attached to the lease, None
/// when it is gone.
pub(crate) fn lease_keys(text: &str) -> Result<Option<Vec<String>>, DecodeError> {
    let a: TimeToLiveAnswer = parse(text)?;
    // -1: gone; absent (0): alive in its last second, its keys still there.
    if a.ttl < 0 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(a.keys.len());
    for k in &a.keys {
        let bytes = codec::decode(k).map_err(|e| {
            DecodeError::new(format!("lease key is not base64 ({e})"), snippet(k, 0))
        })?;
        // Keys we did not write may be any bytes; they are only compared and logged.
        out.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    Ok(Some(out))
}

/// The answer to `/lease/timetolive` without keys: the seconds the lease has left, None
/// when it is gone (-1); 0 in its last second (the gateway leaves the field out).
pub(crate) fn lease_ttl(text: &str) -> Result<Option<i64>, DecodeError> {
    let a: TimeToLiveAnswer = parse(text)?;
    Ok((a.ttl >= 0).then_some(a.ttl))
}

#[derive(Deserialize)]
struct AuthAnswer {
    #[serde(rename = "header")]
    _header: IgnoredAny,
    token: String,
}

/// The answer to `/auth/authenticate`: the token for the `Authorization` header.
pub(crate) fn token(text: &str) -> Result<String, DecodeError> {
    parse::<AuthAnswer>(text).map(|a| a.token)
}

#[derive(Deserialize)]
struct VersionAnswer {
    etcdserver: Option<String>,
    etcdcluster: Option<String>,
}

/// The answer to `GET /version`: the cluster's version, else the server's.
pub(crate) fn version(text: &str) -> Result<String, DecodeError> {
    let a: VersionAnswer = parse(text)?;
    a.etcdcluster
        .or(a.etcdserver)
        .ok_or_else(|| DecodeError::new("no etcdcluster or etcdserver", snippet(text, 0)))
}

/// An error body: `{"error","message","code"}`; a streaming call (keepalive) that fails
/// after its 200 header sends `{"error":{"grpc_code","message",..}}` instead.
#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<ErrorField>,
    message: Option<String>,
    code: Option<Code>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Text(String),
    Stream {
        grpc_code: Option<Code>,
        message: Option<String>,
    },
}

/// What etcd said when it refused a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// `Code::Ok` when the body names none.
    pub code: Code,
    /// The body's message, else the body itself.
    pub message: String,
    /// The body has an `error` field: a 200 answer with one is a refusal too.
    pub has_error: bool,
}

/// Reads an error body leniently: it is already a refusal, and its words are for a person.
pub(crate) fn refusal(text: &str) -> Refusal {
    let body: ErrorBody = serde_json::from_str(text).unwrap_or_default();
    let has_error = body.error.is_some();
    let (stream_code, error_message) = match body.error {
        Some(ErrorField::Text(m)) => (None, Some(m)),
        Some(ErrorField::Stream { grpc_code, message }) => (grpc_code, message),
        None => (None, None),
    };
    Refusal {
        code: body.code.or(stream_code).unwrap_or(Code::Ok),
        message: body
            .message
            .or(error_message)
            .unwrap_or_else(|| text.to_string()),
        has_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded answer (tests/fixtures/etcd/record.sh).
    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/etcd/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const LEASE: i64 = 5725097924076502022;

    fn kv(key: &str, value: &str, lease: i64) -> Kv {
        Kv {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }

    #[test]
    fn range_pages() {
        let page = range(&fixture("range_page.json")).unwrap();
        assert_eq!(page.kvs, vec![kv("/s/a", "1", LEASE), kv("/s/b", "2", 0)]);
        assert_eq!(page.revision, 3);
        assert!(page.more);

        let page = range(&fixture("range_empty.json")).unwrap();
        assert!(page.kvs.is_empty());
        assert_eq!(page.revision, 3);
        assert!(!page.more);
    }

    #[test]
    fn txn_outcomes() {
        assert!(txn(&fixture("txn_succeeded.json")).unwrap());
        assert!(!txn(&fixture("txn_failed.json")).unwrap());
        assert_eq!(
            txn_ranges(&fixture("txn_ranges.json"), 2).unwrap(),
            vec![
                kv("/s/a", "1", LEASE),
                kv("/s/b", "2", 0),
                kv("/s/c", "3", 0)
            ]
        );
    }

    #[test]
    fn leases() {
        assert_eq!(grant(&fixture("lease_grant.json")).unwrap(), LEASE);
        assert_eq!(
            keepalive(&fixture("lease_keepalive.json")).unwrap(),
            Some(60)
        );
        assert_eq!(
            keepalive(&fixture("lease_keepalive_expired.json")).unwrap(),
            None
        );
        assert_eq!(
            lease_keys(&fixture("lease_timetolive.json")).unwrap(),
            Some(vec!["/s/a".to_string()])
        );
        assert_eq!(
            lease_keys(&fixture("lease_timetolive_expired.json")).unwrap(),
            None
        );
        assert_eq!(
            lease_keys(&fixture("lease_timetolive_last_second.json")).unwrap(),
            Some(vec!["/x".to_string()]),
            "alive in its last second"
        );
        assert_eq!(
            lease_ttl(&fixture("lease_timetolive.json")).unwrap(),
            Some(59)
        );
        assert_eq!(
            lease_ttl(&fixture("lease_timetolive_expired.json")).unwrap(),
            None
        );
        assert_eq!(lease_ttl(r#"{"header":{}}"#).unwrap(), Some(0));
        assert_eq!(
            time_to_live(&fixture("lease_timetolive.json")).unwrap(),
            Some(LeaseTtl {
                remaining: 59,
                granted: 60,
                term: 2
            })
        );
        assert_eq!(
            time_to_live(&fixture("lease_timetolive_expired.json")).unwrap(),
            None
        );
        // In its last second the gateway leaves TTL (0) out.
        let last = r#"{"header":{},"ID":"1","grantedTTL":"6"}"#;
        assert_eq!(
            time_to_live(last).unwrap(),
            Some(LeaseTtl {
                remaining: 0,
                granted: 6,
                term: 0
            })
        );
        assert!(time_to_live(r#"{"header":{},"ID":"1","TTL":"5"}"#).is_err());
    }

    #[test]
    fn auth_and_version() {
        assert_eq!(
            token(&fixture("auth_token.json")).unwrap(),
            "ykOraWJByLRQKCZq.20"
        );
        assert_eq!(version(&fixture("version.json")).unwrap(), "3.4.0");
        assert_eq!(version(r#"{"etcdserver":"3.3.1"}"#).unwrap(), "3.3.1");
    }

    #[test]
    fn error_bodies() {
        for (file, code, message) in [
            (
                "error_400_bad_base64.json",
                Code::InvalidArgument,
                "illegal base64 data",
            ),
            (
                "error_400_user_name_empty.json",
                Code::InvalidArgument,
                "user name is empty",
            ),
            (
                "error_400_auth_failed.json",
                Code::InvalidArgument,
                "authentication failed",
            ),
            (
                "error_401_invalid_token.json",
                Code::Unauthenticated,
                "invalid auth token",
            ),
            (
                "error_403_permission_denied.json",
                Code::PermissionDenied,
                "permission denied",
            ),
            (
                "error_404_lease_not_found.json",
                Code::NotFound,
                "lease not found",
            ),
            (
                "error_412_auth_not_enabled.json",
                Code::FailedPrecondition,
                "not enabled",
            ),
        ] {
            let r = refusal(&fixture(file));
            assert_eq!(r.code, code, "{file}");
            assert!(r.message.starts_with("etcdserver: ") || code == Code::InvalidArgument);
            assert!(r.message.contains(message), "{file}: {}", r.message);
            assert!(r.has_error, "{file}");
        }
        // A streaming call's error after its 200 header.
        let stream = r#"{"error":{"grpc_code":14,"http_code":503,"message":"no leader"}}"#;
        let r = refusal(stream);
        assert_eq!(
            (r.code, r.message.as_str(), r.has_error),
            (Code::Unavailable, "no leader", true)
        );
        // JSON, but not an error body: the body is the message.
        let r = refusal("[1]");
        assert_eq!(
            (r.code, r.message.as_str(), r.has_error),
            (Code::Ok, "[1]", false)
        );
    }

    #[test]
    fn int64_as_string_or_number() {
        let h: Header = serde_json::from_str(r#"{"revision":"7587884467442474531"}"#).unwrap();
        assert_eq!(h.revision, 7587884467442474531);
        let h: Header = serde_json::from_str(r#"{"revision":3}"#).unwrap();
        assert_eq!(h.revision, 3);
        let h: Header = serde_json::from_str("{}").unwrap();
        assert_eq!(h.revision, 0);
        assert!(serde_json::from_str::<Header>(r#"{"revision":"x"}"#).is_err());
        assert!(serde_json::from_str::<Header>(r#"{"revision":18446744073709551615}"#).is_err());
    }

    /// Each malformed answer is a decode error that names the problem and quotes the
    /// answer (or, for a bad field, the field).
    #[test]
    fn malformed_answers_are_decode_errors() {
        type Read = fn(&str) -> Result<(), DecodeError>;
        let range: Read = |t| range(t).map(drop);
        let txn: Read = |t| txn(t).map(drop);
        let two_ranges: Read = |t| txn_ranges(t, 2).map(drop);
        let one_range: Read = |t| txn_ranges(t, 1).map(drop);
        let grant: Read = |t| grant(t).map(drop);
        let keepalive: Read = |t| keepalive(t).map(drop);
        let lease_keys: Read = |t| lease_keys(t).map(drop);
        let token: Read = |t| token(t).map(drop);
        let version: Read = |t| version(t).map(drop);
        // (what, reader, answer, problem, quote: "" for the whole answer)
        let cases: &[(&str, Read, &str, &str, &str)] = &[
            ("range without header", range, r#"{"kvs":[]}"#, "header", ""),
            (
                "range kv without key",
                range,
                r#"{"header":{},"kvs":[{"value":"MQ=="}]}"#,
                "missing field `key`",
                "",
            ),
            (
                "range key not base64",
                range,
                r#"{"header":{},"kvs":[{"key":"!!"}]}"#,
                "key is not base64",
                "!!",
            ),
            (
                "range value not UTF-8",
                range,
                r#"{"header":{},"kvs":[{"key":"YQ==","value":"/w=="}]}"#,
                "value is not UTF-8",
                "/w==",
            ),
            (
                "range lease not int64",
                range,
                r#"{"header":{},"kvs":[{"key":"YQ==","lease":"x"}]}"#,
                "int64",
                "",
            ),
            ("range of a list", range, "[]", "invalid length 0", ""),
            (
                "txn without header",
                txn,
                r#"{"succeeded":true}"#,
                "header",
                "",
            ),
            (
                "txn succeeded not bool",
                txn,
                r#"{"header":{},"succeeded":"yes"}"#,
                "expected a boolean",
                "",
            ),
            (
                "txn ranges too few",
                two_ranges,
                r#"{"header":{},"succeeded":true,"responses":[{"response_range":{}}]}"#,
                "1 answers to 2 range requests",
                "",
            ),
            (
                "txn ranges not a range",
                one_range,
                r#"{"header":{},"succeeded":true,"responses":[{"response_put":{}}]}"#,
                "answer 0 is not a response_range",
                "",
            ),
            (
                "grant without ID",
                grant,
                r#"{"header":{},"TTL":"60"}"#,
                "`ID`",
                "",
            ),
            (
                "grant ID 0",
                grant,
                r#"{"header":{},"ID":"0"}"#,
                "lease ID 0",
                "",
            ),
            (
                "keepalive without result",
                keepalive,
                r#"{"ID":"1"}"#,
                "`result`",
                "",
            ),
            (
                "keepalive TTL not int64",
                keepalive,
                r#"{"result":{"header":{},"TTL":"soon"}}"#,
                "int64",
                "",
            ),
            ("revoke without header", revoke, "{}", "`header`", ""),
            (
                "timetolive without header",
                lease_keys,
                r#"{"TTL":"5"}"#,
                "`header`",
                "",
            ),
            (
                "timetolive key not base64",
                lease_keys,
                r#"{"header":{},"TTL":"5","keys":["!!"]}"#,
                "lease key is not base64",
                "!!",
            ),
            (
                "authenticate without token",
                token,
                r#"{"header":{}}"#,
                "`token`",
                "",
            ),
            (
                "version of another service",
                version,
                r#"{"ok":1}"#,
                "no etcdcluster",
                "",
            ),
            ("not JSON", range, "<html>", "expected value", ""),
        ];
        for (what, read, answer, problem, quote) in cases {
            let e = read(answer).expect_err(what).to_string();
            let quote = if quote.is_empty() { answer } else { quote };
            assert!(e.contains(problem), "{what}: {e}");
            assert!(e.ends_with(&format!(" in {quote:?}")), "{what}: {e}");
        }
    }

    #[test]
    fn long_answers_are_quoted_around_the_problem() {
        let mut body = String::from(r#"{"header":{},"kvs":["#);
        for i in 0..100 {
            body.push_str(&format!(
                r#"{{"key":"{}"}},"#,
                codec::encode(format!("/k{i}"))
            ));
        }
        body.push_str(r#"{"value":"MQ=="}]}"#);
        let e = range(&body).unwrap_err().to_string();
        assert!(e.contains("missing field `key`"), "{e}");
        assert!(e.contains(r#"{\"value\":\"MQ==\"}]}"#), "{e}");
        assert!(e.contains("\"...") && e.len() < 400, "{e}");

        assert_eq!(snippet("short", 3), "short");
        let long = "é".repeat(300);
        let s = snippet(&long, 301);
        assert!(s.starts_with("...") && s.ends_with("..."), "{s}");
    }
}
