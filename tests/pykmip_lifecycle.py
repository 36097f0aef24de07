#!/usr/bin/python3
"""A key's life cycle through a third-party KMIP client: Debian's PyKMIP 0.10.

    OPENSSL_CONF=tls13.cnf /usr/bin/python3 tests/pykmip_lifecycle.py \
        --host 127.0.0.1 --port PORT --ca STATE/cert.pem --user LABEL --pin PIN \
        [--config EMPTY.conf]

Discover Versions, Query, Create Key Pair (RSA 2048, ECDSA P-256) with names and usage
masks, Get (the public key, checked against its key format), Activate, Sign (verified
with python3-cryptography against the key material from Get), Destroy (private, then
public) and a Get on a destroyed UID.  PyKMIP sends no client certificate; an
OPENSSL_CONF with MinProtocol = TLSv1.3 keeps it on TLS 1.3.  Ends with
"N passed, N failed".
"""
import logging
import os
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from kmip.core import enums
from kmip.core.factories.attributes import AttributeFactory
from kmip.pie import client as pie_client

from pykmip_common import Tally, arg_parser, failure, run

T = Tally("pykmip")
check = T.check
attempt = T.attempt


def failure_reason(fn, *args, **kwargs):
    """Runs fn, which must fail with KmipOperationFailure; returns its Result Reason."""
    return failure(fn, *args, **kwargs)[0]


def rand_name():
    """A name like Cascade's: 52 base32hex characters."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
    return "".join(secrets.choice(alphabet) for _ in range(52))


def load_public(material, fmt):
    """python3-cryptography public key from a Get's key material and format."""
    if fmt == enums.KeyFormatType.PKCS_1:
        return serialization.load_der_public_key(pkcs1_to_spki(material))
    return serialization.load_der_public_key(material)  # X.509 and Raw hold an SPKI


def pkcs1_to_spki(der):
    """Wraps a PKCS#1 RSAPublicKey into a SubjectPublicKeyInfo (rsaEncryption, NULL)."""
    def tlv(tag, body):
        n = len(body)
        if n < 0x80:
            ln = bytes([n])
        else:
            b = n.to_bytes((n.bit_length() + 7) // 8, "big")
            ln = bytes([0x80 | len(b)]) + b
        return bytes([tag]) + ln + body
    alg = tlv(0x30, bytes.fromhex("06092a864886f70d0101010500"))
    return tlv(0x30, alg + tlv(0x03, b"\x00" + der))


def lifecycle(c, alg, length):
    """Create, get, activate, sign and verify, destroy one key pair."""
    label = "%s-%d" % (alg.name, length)
    pub_name, priv_name = rand_name(), rand_name()
    r = attempt(label + ": create_key_pair", c.create_key_pair, alg, length,
                public_name=pub_name,
                public_usage_mask=[enums.CryptographicUsageMask.VERIFY],
                private_name=priv_name,
                private_usage_mask=[enums.CryptographicUsageMask.SIGN])
    if r is None:
        return
    pub, priv = r
    check(pub.endswith("_pub") and priv.endswith("_priv")
          and pub[:-4] == priv[:-5], label + ": UIDs HEX_pub / HEX_priv", (pub, priv))

    key = attempt(label + ": get public key", c.get, pub)
    pk = None
    if key is not None:
        fmt = key.key_format_type
        want = (enums.KeyFormatType.PKCS_1,) if alg == enums.CryptographicAlgorithm.RSA \
            else (enums.KeyFormatType.RAW, enums.KeyFormatType.X_509)
        check(fmt in want, label + ": public key format", fmt)
        check(key.cryptographic_length == length, label + ": cryptographic length",
              key.cryptographic_length)
        pk = attempt(label + ": key material parses", load_public, key.value, fmt)
        if pk is not None and alg == enums.CryptographicAlgorithm.RSA:
            check(isinstance(pk, rsa.RSAPublicKey) and pk.key_size == length,
                  label + ": RSA public key of the asked size")
        if pk is not None and alg == enums.CryptographicAlgorithm.ECDSA:
            check(isinstance(pk, ec.EllipticCurvePublicKey)
                  and pk.curve.name == "secp256r1", label + ": P-256 public key")

    attempt(label + ": activate private key", c.activate, priv)

    params = {"hashing_algorithm": enums.HashingAlgorithm.SHA_256,
              "cryptographic_algorithm": alg}
    if alg == enums.CryptographicAlgorithm.RSA:
        params["padding_method"] = enums.PaddingMethod.PKCS1v15
    for i in range(3):
        data = b"pykmip sign %d " % i + os.urandom(i * 37)
        sig = attempt(label + ": sign", c.sign, data, uid=priv,
                      cryptographic_parameters=params)
        if sig is None or pk is None:
            continue
        try:
            if alg == enums.CryptographicAlgorithm.RSA:
                pk.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
            else:
                pk.verify(sig, data, ec.ECDSA(hashes.SHA256()))
            verified = True
        except InvalidSignature:
            verified = False
        check(verified, label + ": signature %d verifies" % i)

    r = failure_reason(c.get, priv)
    check(r == enums.ResultReason.PERMISSION_DENIED,
          label + ": get on the private key -> Permission Denied, no key material", r)

    attr = AttributeFactory().create_attribute(enums.AttributeType.NAME, priv_name)
    found = attempt(label + ": locate by name", c.locate, attributes=[attr])
    check(found == [priv], label + ": locate by name finds the private key", found)

    attempt(label + ": revoke the private key", c.revoke,
            enums.RevocationReasonCode.CESSATION_OF_OPERATION, priv)
    r = failure_reason(c.sign, b"x", uid=priv, cryptographic_parameters=params)
    check(r == enums.ResultReason.PERMISSION_DENIED, label + ": a revoked key does not sign", r)

    attempt(label + ": destroy private key", c.destroy, priv)
    attempt(label + ": destroy public key", c.destroy, pub)
    r = failure_reason(c.get, pub)
    check(r == enums.ResultReason.ITEM_NOT_FOUND, label + ": get destroyed -> Item Not Found", r)
    r = failure_reason(c.sign, b"x", uid=priv, cryptographic_parameters=params)
    check(r == enums.ResultReason.ITEM_NOT_FOUND, label + ": sign destroyed -> Item Not Found", r)


def main():
    ap = arg_parser()
    a = ap.parse_args()
    logging.disable(logging.CRITICAL)

    c = pie_client.ProxyKmipClient(hostname=a.host, port=a.port, cert=None, key=None,
                                   ca=a.ca, ssl_version="PROTOCOL_TLS",
                                   username=a.user, password=a.pin,
                                   config_file=a.config)
    attempt("connect (TLS 1.3, no client certificate)", c.open)
    sock = c.proxy.socket
    if not check(sock is not None, "connected"):
        T.summary()
        return 1
    check(sock.version() == "TLSv1.3", "TLS 1.3 negotiated", sock.version())

    r = attempt("discover_versions", c.proxy.discover_versions)
    if r is not None:
        check(r.result_status.value == enums.ResultStatus.SUCCESS, "discover_versions succeeds")
        vs = [(v.major, v.minor) for v in (r.protocol_versions or [])]
        check(vs[:1] == [(1, 2)], "discover_versions lists 1.2 first", vs)

    r = attempt("query", c.proxy.query, query_functions=[
        enums.QueryFunction.QUERY_OPERATIONS, enums.QueryFunction.QUERY_OBJECTS,
        enums.QueryFunction.QUERY_SERVER_INFORMATION])
    if r is not None:
        check(r.result_status.value == enums.ResultStatus.SUCCESS, "query succeeds")
        ops = [int(getattr(o, "value", o)) for o in (r.operations or [])]
        for op in (enums.Operation.CREATE_KEY_PAIR, enums.Operation.GET,
                   enums.Operation.SIGN, enums.Operation.DESTROY):
            check(op.value in ops, "query lists " + op.name, ops)
        vi = r.vendor_identification or ""
        check(vi.startswith("kmip2pkcs11 ") and ("; token: '%s'" % a.user) in vi
              and "; PKCS#11 module: " in vi,
              "query: Vendor Identification names the daemon, the token and the module", vi)

    lifecycle(c, enums.CryptographicAlgorithm.RSA, 2048)
    lifecycle(c, enums.CryptographicAlgorithm.ECDSA, 256)

    # A wrong password on a new connection: refused.
    bad = pie_client.ProxyKmipClient(hostname=a.host, port=a.port, ca=a.ca,
                                     ssl_version="PROTOCOL_TLS", username=a.user,
                                     password=a.pin + "9", config_file=a.config)
    attempt("connect with a wrong PIN", bad.open)
    if check(bad.proxy.socket is not None, "a second connection opens (the PIN is checked later)"):
        r = failure_reason(bad.create_key_pair, enums.CryptographicAlgorithm.ECDSA, 256)
        check(r == enums.ResultReason.AUTHENTICATION_NOT_SUCCESSFUL,
              "wrong PIN -> Authentication Not Successful", r)
        bad.close()
    c.close()
    return T.summary()


if __name__ == "__main__":
    run(T.name, main)
