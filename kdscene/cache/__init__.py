"""The teacher cache: record the teacher's outputs for K augmentation draws once, replay them in training.

``kdscene-cache`` (:func:`record_cache`) runs the teacher once over every training image under K
draws of the training transform and stores, per view, what KD, DKD, AT (p = 2) and DCT read from the
teacher: its logits and per-tap channel-energy maps (:mod:`kdscene.cache.store`). A run with
``teacher_cache=<path>`` replays draw ``e mod K`` in epoch ``e`` and builds no teacher at all. The
header names the data, transform, sampling seed, teacher and taps it was recorded from
(:mod:`kdscene.cache.header`); a run that differs is refused, naming what differs.
"""

from kdscene.cache.header import CacheMismatchError, run_description
from kdscene.cache.record import VERIFY_RTOL, record_cache, verify_cache
from kdscene.cache.replay import prepare_replay, resolve_device
from kdscene.cache.store import CacheWriter, TeacherCache
from kdscene.cache.terms import check_cacheable, live_teacher_reason

__all__ = [
    "VERIFY_RTOL",
    "CacheMismatchError",
    "CacheWriter",
    "TeacherCache",
    "check_cacheable",
    "live_teacher_reason",
    "prepare_replay",
    "record_cache",
    "resolve_device",
    "run_description",
    "verify_cache",
]
