"""Entra ID → Frankli directory sync: the logic behind the `entra_to_frankli__<tenant>` DAGs."""
