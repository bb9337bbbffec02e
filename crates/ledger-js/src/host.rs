//! The native half of the JavaScript API: Rust functions on a private host object that
//! `prelude.js` wraps into CCF's `console` and `ccf` globals.
//!
//! Owns the per-execution state those functions touch ([`HostState`]: logs and the
//! key-value view). Byte buffers cross the boundary as "binary strings" (one char per
//! byte, made by the prelude) into Rust and as `ArrayBuffer`s out of it, because reading an
//! `ArrayBuffer`'s memory directly needs `unsafe` in rquickjs.

use std::cell::RefCell;
use std::rc::Rc;

use rquickjs::{Array, ArrayBuffer, Ctx, Exception, Function, Object};

use crate::crypto;
use crate::kv::{KvFault, KvView};
use crate::logs::{LogBuffer, LogLevel};

/// What the host functions of one execution share.
pub(crate) struct HostState {
    pub logs: LogBuffer,
    pub kv: KvView,
}

pub(crate) type Shared = Rc<RefCell<HostState>>;

/// The bytes of a binary string made by the prelude's `toBin`.
pub(crate) fn bin_to_bytes(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

fn kv_error(ctx: &Ctx<'_>, fault: KvFault) -> rquickjs::Error {
    match fault {
        KvFault::TooLarge => Exception::throw_range(ctx, &fault.message()),
        _ => Exception::throw_message(ctx, &fault.message()),
    }
}

fn buffer<'js>(ctx: &Ctx<'js>, bytes: Vec<u8>) -> rquickjs::Result<ArrayBuffer<'js>> {
    ArrayBuffer::new(ctx.clone(), bytes)
}

/// Builds the host object; the prelude takes it from `globalThis.__cledger_host`.
pub(crate) fn install<'js>(ctx: &Ctx<'js>, state: &Shared) -> rquickjs::Result<Object<'js>> {
    let host = Object::new(ctx.clone())?;

    let s = state.clone();
    host.set(
        "log",
        Function::new(ctx.clone(), move |level: String, message: String| {
            let mut st = s.borrow_mut();
            st.logs.push(LogLevel::parse(&level), message);
            st.logs.accepting()
        })?,
    )?;
    let s = state.clone();
    host.set(
        "logDrop",
        Function::new(ctx.clone(), move || s.borrow_mut().logs.drop_one())?,
    )?;

    host.set(
        "strToBuf",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, s: String| {
            buffer(&ctx, s.into_bytes())
        })?,
    )?;
    host.set(
        "bufToStr",
        Function::new(ctx.clone(), |bin: String| {
            String::from_utf8_lossy(&bin_to_bytes(&bin)).into_owned()
        })?,
    )?;
    host.set(
        "digest",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, alg: String, bin: String| match crypto::digest(
                &alg,
                &bin_to_bytes(&bin),
            ) {
                Some(d) => buffer(&ctx, d),
                None => Err(Exception::throw_type(
                    &ctx,
                    &format!("unsupported digest algorithm '{alg}' (SHA-256, SHA-384, SHA-512)"),
                )),
            },
        )?,
    )?;
    host.set(
        "pemToId",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, pem: String| {
            crypto::pem_to_id(&pem).map_err(|m| Exception::throw_message(&ctx, &m))
        })?,
    )?;
    host.set(
        "verifySignature",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, name: String, hash: String, key: String, sig: String, data: String| {
                crypto::verify_signature(
                    &name,
                    &hash,
                    &key,
                    &bin_to_bytes(&sig),
                    &bin_to_bytes(&data),
                )
                .map_err(|m| Exception::throw_type(&ctx, &m))
            },
        )?,
    )?;

    let s = state.clone();
    host.set(
        "kvGet",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, table: String, key: String| {
                let got = s.borrow_mut().kv.get(&table, &bin_to_bytes(&key));
                match got {
                    Ok(Some(v)) => Ok(Some(buffer(&ctx, v)?)),
                    Ok(None) => Ok(None),
                    Err(f) => Err(kv_error(&ctx, f)),
                }
            },
        )?,
    )?;
    let s = state.clone();
    host.set(
        "kvSet",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, table: String, key: String, value: String| {
                let r = s
                    .borrow_mut()
                    .kv
                    .set(&table, bin_to_bytes(&key), bin_to_bytes(&value));
                r.map_err(|f| kv_error(&ctx, f))
            },
        )?,
    )?;
    let s = state.clone();
    host.set(
        "kvDelete",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, table: String, key: String| {
                let r = s.borrow_mut().kv.delete(&table, bin_to_bytes(&key));
                r.map_err(|f| kv_error(&ctx, f))
            },
        )?,
    )?;
    let s = state.clone();
    host.set(
        "kvClear",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, table: String| {
            let r = s.borrow_mut().kv.clear(&table);
            r.map_err(|f| kv_error(&ctx, f))
        })?,
    )?;
    let s = state.clone();
    host.set(
        "kvEntries",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, table: String| {
            let entries = s.borrow_mut().kv.entries(&table);
            let entries = entries.map_err(|f| kv_error(&ctx, f))?;
            let out = Array::new(ctx.clone())?;
            for (i, (k, v)) in entries.into_iter().enumerate() {
                let pair = Array::new(ctx.clone())?;
                pair.set(0, buffer(&ctx, k)?)?;
                pair.set(1, buffer(&ctx, v)?)?;
                out.set(i, pair)?;
            }
            Ok::<_, rquickjs::Error>(out)
        })?,
    )?;

    Ok(host)
}
