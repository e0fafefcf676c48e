"""The heavy detectors built for 32 px training faces (their defaults are 256 px), shared by the training tests.

PEL runs on B0 trunks (the same 7-stage layout as its B4) to keep the suite quick; RALF's perceptual network is
``random`` (drawn from the run's seed at setup), so the tests need no ImageNet checkpoint for eq. 6.
"""

TRAINING_KWARGS = {
    "pel": {"backbone": "efficientnet_b0"},
    "mclcr": {"image_size": 32},
    "ralf": {"image_size": 32, "width": 8, "blocks_per_scale": 1, "discriminator_width": 8, "perceptual": "random"},
}
