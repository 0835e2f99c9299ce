#!/usr/bin/python3
"""DKIM/ARC reference checks with Debian's python3-dkim (dkimpy), for e2e/auth_test.go.

Keys come from a JSON file the test writes, never from the real DNS:
  {"dns": {"sel._domainkey.example.org": "v=DKIM1; k=rsa; p=..."}}

  dkimcheck.py sign    KEYS.json MSG SELECTOR DOMAIN PRIVKEY.pem          -> DKIM-Signature field on stdout
  dkimcheck.py arcsign KEYS.json MSG SELECTOR DOMAIN PRIVKEY.pem SRV_ID   -> ARC set fields on stdout
  dkimcheck.py verify  KEYS.json MSG                                      -> JSON: every DKIM signature and the ARC chain
"""
import json
import re
import sys

import dkim

HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


def main():
    cmd, keys, msgfile = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(keys) as f:
        dns = {k.lower().rstrip("."): v for k, v in json.load(f)["dns"].items()}

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        rec = dns.get(name.lower().rstrip("."))
        return rec.encode() if rec is not None else None

    with open(msgfile, "rb") as f:
        msg = f.read()
    if cmd == "sign":
        sel, dom, keyfile = sys.argv[4:7]
        priv = open(keyfile, "rb").read()
        sig = dkim.sign(msg, sel.encode(), dom.encode(), priv,
                        canonicalize=(b"relaxed", b"simple"), include_headers=HEADERS)
        sys.stdout.buffer.write(sig)
    elif cmd == "arcsign":
        sel, dom, keyfile, srv = sys.argv[4:8]
        priv = open(keyfile, "rb").read()
        lines = dkim.arc_sign(msg, sel.encode(), dom.encode(), priv, srv.encode(), include_headers=HEADERS)
        if not lines:
            sys.exit("arc_sign produced no ARC set")
        sys.stdout.buffer.write(b"".join(lines))
    elif cmd == "verify":
        d = dkim.DKIM(msg)
        sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
        out = {"dkim": []}
        for i, v in enumerate(sigs):
            m = re.search(rb"(?:^|;)\s*d\s*=\s*([^;\s]+)", v)
            try:
                ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)
                err = ""
            except Exception as e:  # a DKIMException is a failed check
                ok, err = False, str(e)
            out["dkim"].append({"d": m.group(1).decode() if m else "", "ok": bool(ok), "err": err})
        cv, results, reason = dkim.arc_verify(msg, dnsfunc=dnsfunc)
        out["arc"] = {"cv": cv.decode() if isinstance(cv, bytes) else str(cv), "reason": reason,
                      "instances": len(results)}
        print(json.dumps(out))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
