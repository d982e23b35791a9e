"""Finding counterexamples (attacks, with replay on the original model) and completing proofs
(branch and bound, ``verifier.search.bab``)."""
from .attack import AttackOptions, AttackResult, attack
from .replay import Counterexample, Replay, snap, snap_to_float32

__all__ = ["attack", "AttackOptions", "AttackResult", "Replay", "Counterexample",
           "snap", "snap_to_float32"]
