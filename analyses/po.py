"""G-effects of preference optimisation (PO: learn refusals on forget questions), with and without
its retain NLL term.

PO (TOFU's "IDK", Maini et al. 2024; called PO by Wang et al., ICLR 2025) does not push the forget
likelihood down directly: its forget G-effect comes from fitting refusal answers, so it tends to
be small and slow. Dropping the retain term (retain_weight = 0) shows what the regulariser
contributes. Output: ``analyses/out/po/``.
"""

from common import Variant, main

VARIANTS = [
    Variant("po", "idk"),
    Variant("po_no_retain", "idk", hparams={"retain_weight": 0.0}),
]

if __name__ == "__main__":
    main("po", VARIANTS, __doc__)
