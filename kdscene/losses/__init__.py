"""Distillation losses: plain ``nn.Module``s, importable without Lightning or Hydra.

Every loss takes ``(student: Features, teacher: Features | None, labels)`` and returns a dict of
named, already-weighted terms (:mod:`kdscene.losses.base`). ``LinearWarmup`` schedules their weights.
"""

from kdscene.features import Features, TapInfo
from kdscene.losses.at import ATLoss, attention_map
from kdscene.losses.base import DistillLoss
from kdscene.losses.ce import CrossEntropyLoss
from kdscene.losses.crd import CRDLoss, crd_nce_loss
from kdscene.losses.dct import DCTAttentionLoss, dct_frequency_map
from kdscene.losses.dkd import DKDLoss, dkd_parts
from kdscene.losses.fam import FAMFusion, FAMKDLoss, FAMModule
from kdscene.losses.fitnet import FitNetLoss, hint_regressor
from kdscene.losses.kd import KDLoss, kd_divergence
from kdscene.losses.local_attention import LocalSelfAttention
from kdscene.losses.nst import NSTLoss, nst_mmd
from kdscene.losses.ofd import OFDLoss, ofd_margin, partial_l2
from kdscene.losses.pkt import PKTLoss, pkt_divergence
from kdscene.losses.review import ABF, ReviewKDLoss, hcl_loss
from kdscene.losses.rkd import RKDLoss, rkd_angle, rkd_distance
from kdscene.losses.schedule import LinearWarmup
from kdscene.losses.semckd import SemCKDLoss
from kdscene.losses.sp import SPLoss, similarity_matrix
from kdscene.losses.srm import SRMDictionaryLoss, SRMLoss, load_dictionaries
from kdscene.losses.srm_parts import SparseCoder, SRMPredictor, keep_top, srm_sizes
from kdscene.losses.vid import VIDLoss, VIDRegressor

__all__ = [
    "ABF",
    "ATLoss",
    "CRDLoss",
    "CrossEntropyLoss",
    "DCTAttentionLoss",
    "DKDLoss",
    "DistillLoss",
    "FAMFusion",
    "FAMKDLoss",
    "FAMModule",
    "Features",
    "FitNetLoss",
    "KDLoss",
    "LinearWarmup",
    "LocalSelfAttention",
    "NSTLoss",
    "OFDLoss",
    "PKTLoss",
    "RKDLoss",
    "ReviewKDLoss",
    "SPLoss",
    "SRMDictionaryLoss",
    "SRMLoss",
    "SRMPredictor",
    "SemCKDLoss",
    "SparseCoder",
    "TapInfo",
    "VIDLoss",
    "VIDRegressor",
    "attention_map",
    "crd_nce_loss",
    "dct_frequency_map",
    "dkd_parts",
    "hcl_loss",
    "hint_regressor",
    "kd_divergence",
    "keep_top",
    "load_dictionaries",
    "nst_mmd",
    "ofd_margin",
    "partial_l2",
    "pkt_divergence",
    "rkd_angle",
    "rkd_distance",
    "similarity_matrix",
    "srm_sizes",
]
