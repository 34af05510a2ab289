"""Stage 1: the baseline search (``nas-search``) and full training of one network (``nas-train``)."""
