"""navsim's reference agents (spec §2.4): every score table lists the learned agents against these."""

from agents.baselines.constant_velocity import ConstantVelocityAgent
from agents.baselines.ego_status_mlp import EgoStatusMLPAgent
from agents.baselines.human import HumanAgent
from agents.baselines.transfuser import TransfuserAgent

__all__ = ["ConstantVelocityAgent", "EgoStatusMLPAgent", "HumanAgent", "TransfuserAgent"]
