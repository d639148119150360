#!/usr/bin/env python3
"""A straightforward SEV-SNP report verifier in Python (`cryptography`), the comparison
point for `vouch verify-report` as a whole process: ARK self-signature, ASK <- ARK,
VCEK <- ASK (RSA-PSS/SHA-384, salt 48), then the ECDSA P-384 report signature over
[0, 0x2A0) with little-endian r and s. Exit 0 if authentic.
Usage: py_verify.py REPORT VCEK_DER CHAIN_PEM"""
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

report = open(sys.argv[1], "rb").read()
vcek = x509.load_der_x509_certificate(open(sys.argv[2], "rb").read())
ask, ark = x509.load_pem_x509_certificates(open(sys.argv[3], "rb").read())[:2]
pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
for child, parent in ((ark, ark), (ask, ark), (vcek, ask)):
    parent.public_key().verify(child.signature, child.tbs_certificate_bytes, pss, hashes.SHA384())
assert len(report) == 0x4A0
r = int.from_bytes(report[0x2A0:0x2A0 + 72], "little")
s = int.from_bytes(report[0x2A0 + 72:0x2A0 + 144], "little")
vcek.public_key().verify(encode_dss_signature(r, s), report[:0x2A0], ec.ECDSA(hashes.SHA384()))
print("authentic")
