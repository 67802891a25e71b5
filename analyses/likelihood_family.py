"""Layer-wise and step-wise G-effects of gradient ascent (GA) and weighted GA (WGA, α = 1 and 2).

GA's gradient on a token is scaled by 1/p, so as the forget likelihood falls its G-effects grow
and spread into the retain data; WGA weights each token by sg(p^α) and damps exactly that
(Wang et al., ICLR 2025, Sec. 4). Output: ``analyses/out/likelihood_family/``.
"""

from common import Variant, main

VARIANTS = [
    Variant("ga", "ga"),
    Variant("wga", "wga"),
    Variant("wga_alpha2", "wga", hparams={"alpha": 2.0}),
]

if __name__ == "__main__":
    main("likelihood_family", VARIANTS, __doc__)
