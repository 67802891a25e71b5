"""GA and NPO with and without the retain regularisers GD, KL and RR.

GD adds the retain NLL, KL the KL divergence to the starting model on retain data (TOFU, Maini et
al. 2024), RR keeps a block's retain activations at the starting model's (RMU's retain term, Li et
al. 2024). Wang et al. (ICLR 2025, Sec. 6) compare their G-effects: which one actually offsets the
damage on retain data, in which layers and from which step. Output:
``analyses/out/regularisers/``.
"""

from common import Variant, main, with_regulariser

VARIANTS = [
    Variant("ga", "ga"),
    Variant("ga+gd", "gd"),
    Variant("ga+kl", "ga_kl"),
    Variant("ga+rr", with_regulariser("ga", "rr")),
    Variant("npo", "npo"),
    Variant("npo+gd", "npo_gd"),
    Variant("npo+kl", "npo_kl"),
    Variant("npo+rr", with_regulariser("npo", "rr")),
]

if __name__ == "__main__":
    main("regularisers", VARIANTS, __doc__)
