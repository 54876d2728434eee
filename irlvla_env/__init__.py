"""IRL-VLA environment package: NAVSIM v2 data, simulation, scoring, observations and Gymnasium envs."""
