"""The audit log: its entries (entries.py); its hash chains: what a link is (links.py), sealing
(seal.py), verifying (verify.py) and anchoring (anchor.py); and the evidence index by record (evidence.py)."""
