"""G-effects of RMU steering the activations of different blocks.

RMU (Li et al. 2024, WMDP) pushes forget activations at block ℓ towards a fixed random direction
and keeps retain activations at the frozen model's, training the MLPs of blocks ℓ-2..ℓ. Running
it at every block of the tiny model shows how the choice of ℓ moves where the forget and retain
G-effects land (Wang et al., ICLR 2025, study RMU at several layers). Output:
``analyses/out/rmu_layers/``.
"""

from common import Variant, main

BLOCKS = (0, 1, 2, 3)  # the tiny model has 4 blocks
VARIANTS = [Variant(f"rmu_block{layer}", "rmu", hparams={"layer": layer}) for layer in BLOCKS]

if __name__ == "__main__":
    main("rmu_layers", VARIANTS, __doc__)
