"""G-effects of RMU steering the activations of different blocks.

RMU (Li et al. 2024, WMDP) pushes forget activations at block ℓ towards a fixed random direction
and keeps retain activations at the frozen model's, training the MLPs of blocks ℓ-2..ℓ. Running
it at every block of the tiny model shows how the choice of ℓ moves where the forget and retain
G-effects land (Wang et al., ICLR 2025, study RMU at several layers). Output:
``analyses/out/rmu_layers/``.

Scale: the paper's retain weight α = 1200 was tuned for Zephyr-7B; on the tiny model it pins the
activations so firmly that 30 steps change no risk at all. This study uses α = 1 and a learning
rate of 5e-3 (steering coefficient c = 6.5 as in the paper), with which RMU raises the forget
risk while leaving the retain risk nearly unchanged.
"""

from common import Variant, main

BLOCKS = (0, 1, 2, 3)  # the tiny model has 4 blocks
VARIANTS = [Variant(f"rmu_block{layer}", "rmu", hparams={"layer": layer, "alpha": 1.0}, settings={"lr": 5e-3})
            for layer in BLOCKS]

if __name__ == "__main__":
    main("rmu_layers", VARIANTS, __doc__)
