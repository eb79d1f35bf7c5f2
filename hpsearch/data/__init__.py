"""Loading labelled data, label maps, cross-validation splits and the tokenization cache."""
from hpsearch.data.labels import LabelMap
from hpsearch.data.prepare import StudyData, prepare_data
from hpsearch.data.splits import cv_splits

__all__ = ["LabelMap", "StudyData", "cv_splits", "prepare_data"]
