"""Training: run configs, data (skill suite, text), the Lightning module and data module,
callbacks, per-skill scores and evaluation, MFU, the run behind `glassbox train`
(train.py; the command line itself is glassbox/cli.py), and post-hoc transcoder fitting."""
