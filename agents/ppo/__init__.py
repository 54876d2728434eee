"""Stage 3 of IRL-VLA: a customised Stable-Baselines3 PPO (DPPO-style) for the VLA's diffusion planner.

`core` (the `DiffusionCore` protocol), `vla_core` (the VLA behind it), `policy` / `buffer` / `algorithm` (the SB3
pieces), `chain_env` (chain actions → trajectories), `audit` (reward hacking), `config` (`RLConfig`), `train`
(`train_rl`, checkpoints, resume) and `cli` (`irlvla train rl`). Nothing is imported here, so `irlvla --help`
stays fast.
"""
