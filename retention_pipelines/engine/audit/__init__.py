"""The audit log: its entries (entries.py); its hash chains: what a link is (links.py), sealing
(seal.py), verifying (verify.py), anchoring (anchor.py) and the anchors checked against their record
(anchor_check.py); and the evidence index by record (evidence.py)."""
