"""Layer-wise and step-wise G-effects of NPO and its token-wise forms TNPO and WTNPO.

NPO (Zhang et al. 2024) is GA with an instance weight that shrinks as the forget likelihood falls
below the reference model's; TNPO applies that weight per token and WTNPO adds WGA's token
weighting (Wang et al., ICLR 2025). Output: ``analyses/out/npo_family/``.
"""

from common import Variant, main

VARIANTS = [Variant("npo", "npo"), Variant("tnpo", "tnpo"), Variant("wtnpo", "wtnpo")]

if __name__ == "__main__":
    main("npo_family", VARIANTS, __doc__)
