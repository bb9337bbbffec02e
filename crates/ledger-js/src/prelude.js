// CCF's JavaScript globals (console, ccf, Date policy) built on the host functions in
// `host.rs`. Runs before the user's code in every fresh context. The host object is taken
// from the global scope and deleted, so user code reaches the host only through the
// wrappers below; those validate their arguments before the host sees them.
void function () {
  "use strict";
  const host = globalThis.__cledger_host;
  delete globalThis.__cledger_host;
  const RealDate = Date;
  const isView = ArrayBuffer.isView;

  function toBin(buf, what) {
    if (!(buf instanceof ArrayBuffer)) {
      throw new TypeError(what + " must be an ArrayBuffer");
    }
    const u = new Uint8Array(buf);
    let s = "";
    for (let i = 0; i < u.length; i += 8192) {
      s += String.fromCharCode.apply(null, u.subarray(i, i + 8192));
    }
    return s;
  }
  function viewOrBufToBin(data, what) {
    if (isView(data)) {
      return toBin(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength), what);
    }
    return toBin(data, what);
  }

  function describe(v) {
    try {
      if (typeof v === "string") return v;
      if (v instanceof Error) return String(v);
      if (typeof v === "symbol") return v.toString();
      if (v !== null && typeof v === "object") {
        try {
          const s = JSON.stringify(v);
          if (s !== undefined) return s;
        } catch (e) {}
      }
      return String(v);
    } catch (e) {
      try {
        return Object.prototype.toString.call(v);
      } catch (e2) {
        return "(a value that cannot be displayed)";
      }
    }
  }
  host.describe = function (v) {
    let stack;
    try {
      if (v instanceof Error && typeof v.stack === "string") stack = v.stack;
    } catch (e) {}
    return [describe(v), stack];
  };

  // console
  let logFull = false;
  function logger(level) {
    return function (...args) {
      if (logFull) {
        host.logDrop();
        return;
      }
      logFull = !host.log(level, args.map(describe).join(" "));
    };
  }
  globalThis.console = {
    log: logger("log"),
    info: logger("info"),
    warn: logger("warn"),
    error: logger("error"),
    debug: logger("debug"),
  };

  // Date: untrusted time is off until ccf.enableUntrustedDateTime(true).
  let untrustedTime = false;
  function CcfDate(...args) {
    if (new.target === undefined) {
      return untrustedTime ? RealDate() : new RealDate(0).toString();
    }
    if (args.length === 0 && !untrustedTime) {
      return Reflect.construct(RealDate, [0], new.target);
    }
    return Reflect.construct(RealDate, args, new.target);
  }
  CcfDate.prototype = RealDate.prototype;
  CcfDate.now = function now() {
    return untrustedTime ? RealDate.now() : 0;
  };
  CcfDate.UTC = RealDate.UTC;
  CcfDate.parse = RealDate.parse;
  Object.defineProperty(RealDate.prototype, "constructor", {
    value: CcfDate,
    writable: true,
    configurable: true,
    enumerable: false,
  });
  globalThis.Date = CcfDate;

  // ccf.kv
  function kvMap(table) {
    const map = {
      has(key) {
        return host.kvGet(table, toBin(key, "key")) !== undefined;
      },
      get(key) {
        return host.kvGet(table, toBin(key, "key"));
      },
      set(key, value) {
        host.kvSet(table, toBin(key, "key"), toBin(value, "value"));
        return map;
      },
      delete(key) {
        return host.kvDelete(table, toBin(key, "key"));
      },
      clear() {
        host.kvClear(table);
      },
      forEach(callback) {
        if (typeof callback !== "function") {
          throw new TypeError("forEach needs a function");
        }
        for (const [k, v] of host.kvEntries(table)) {
          callback(v, k, map);
        }
      },
      get size() {
        return host.kvEntries(table).length;
      },
    };
    return map;
  }
  const maps = new Map();
  // Large literals are built first and passed by name: QuickJS scans ahead over the contents
  // of every "(" to tell an arrow function's parameters from an expression, so a call whose
  // parentheses hold a big literal costs a scan of it per level of nesting.
  const kvHandler = {
    get(target, name) {
      if (typeof name !== "string") return undefined;
      let m = maps.get(name);
      if (m === undefined) {
        m = kvMap(name);
        maps.set(name, m);
      }
      return m;
    },
    set() {
      return false;
    },
    has(target, name) {
      return typeof name === "string";
    },
  };
  const kv = new Proxy({}, kvHandler);

  const crypto = {
    digest(algorithm, data) {
      return host.digest(String(algorithm), viewOrBufToBin(data, "data"));
    },
    verifySignature(algorithm, key, signature, data) {
      if (algorithm === null || typeof algorithm !== "object") {
        throw new TypeError("algorithm must be an object like {name: 'ECDSA', hash: 'SHA-256'}");
      }
      if (typeof key !== "string") throw new TypeError("key must be a PEM string");
      return host.verifySignature(
        String(algorithm.name),
        String(algorithm.hash),
        key,
        viewOrBufToBin(signature, "signature"),
        viewOrBufToBin(data, "data")
      );
    },
  };

  const ccfGlobal = {
    strToBuf(s) {
      if (typeof s !== "string") throw new TypeError("strToBuf needs a string");
      return host.strToBuf(s);
    },
    bufToStr(buf) {
      return host.bufToStr(toBin(buf, "buffer"));
    },
    jsonCompatibleToBuf(v) {
      const s = JSON.stringify(v);
      if (s === undefined) throw new TypeError("value is not JSON-compatible");
      return host.strToBuf(s);
    },
    bufToJsonCompatible(buf) {
      return JSON.parse(host.bufToStr(toBin(buf, "buffer")));
    },
    pemToId(pem) {
      if (typeof pem !== "string") throw new TypeError("pemToId needs a PEM string");
      return host.pemToId(pem);
    },
    enableUntrustedDateTime(enable) {
      const previous = untrustedTime;
      untrustedTime = !!enable;
      return previous;
    },
    crypto: Object.freeze(crypto),
    kv: kv,
  };
  globalThis.ccf = Object.freeze(ccfGlobal);

  // Conversions the engine calls; not reachable from user code.
  host.formatReturn = function (v) {
    if (v === undefined) return undefined;
    if (typeof v === "string") return v;
    try {
      const s = JSON.stringify(v);
      if (s !== undefined) return s;
    } catch (e) {}
    return describe(v);
  };

  host.makeRequest = function (meta, body) {
    const bodyObj = {
      text() {
        return host.bufToStr(toBin(body, "body"));
      },
      json() {
        return JSON.parse(host.bufToStr(toBin(body, "body")));
      },
      arrayBuffer() {
        return body.slice(0);
      },
    };
    meta.body = bodyObj;
    return meta;
  };

  // Returns [status, [[name, value]...], contentType|undefined, bodyBin] or a string
  // saying what is wrong with the response.
  host.convertResponse = function (r) {
    if (r === null || typeof r !== "object") {
      return "expected an object like {statusCode, headers, body}, got " + describe(r);
    }
    let status = r.statusCode;
    if (status === undefined) status = 200;
    if (!Number.isInteger(status) || status < 100 || status > 599) {
      return "statusCode must be an integer from 100 to 599, got " + describe(status);
    }
    const headers = [];
    let contentType;
    if (r.headers !== undefined && r.headers !== null) {
      if (typeof r.headers !== "object") return "headers must be an object";
      for (const name of Object.keys(r.headers)) {
        const value = r.headers[name];
        if (typeof value !== "string" && typeof value !== "number") {
          return "header '" + name + "' must be a string";
        }
        if (name.toLowerCase() === "content-type") contentType = String(value);
        else headers.push([name, String(value)]);
      }
    }
    const b = r.body;
    let bin = "";
    let kind;
    if (b === undefined) {
      bin = "";
    } else if (typeof b === "string") {
      bin = toBin(host.strToBuf(b), "body");
      kind = "text/plain";
    } else if (b instanceof ArrayBuffer || isView(b)) {
      bin = viewOrBufToBin(b, "body");
      kind = "application/octet-stream";
    } else {
      const s = JSON.stringify(b);
      if (s === undefined) return "body cannot be converted to JSON: " + describe(b);
      bin = toBin(host.strToBuf(s), "body");
      kind = "application/json";
    }
    return [status, headers, contentType === undefined ? kind : contentType, bin];
  };
}();
