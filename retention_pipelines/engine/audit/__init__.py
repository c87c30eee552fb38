"""The audit log: its entries and their one writer, which chains each batch as it writes it
(entries.py); what a link is (links.py), verifying (verify.py), anchoring (anchor.py) and the
anchors checked against their record (anchor_check.py); and the evidence index by record (evidence.py)."""
