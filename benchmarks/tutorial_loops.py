"""Baseline: the loop implementation of the classic NumPy CNN tutorial.

This reproduces, loop for loop, the functions of "Building Convolutional
Neural Network using NumPy from Scratch" by Ahmed Fawzy Gad (2018;
https://www.kdnuggets.com/2018/04/building-convolutional-neural-network-numpy-scratch.html,
code at https://github.com/ahmedfgad/NumPyCNN): ``conv_``, ``conv``,
``pooling`` and ``relu``, with the article's loop bounds, its ``numpy.uint16``
index arithmetic, its output shapes and its per-pixel Python loops. It is the
baseline that ``benchmarks/tutorial_speed.py`` times :mod:`xpcnn.tutorial`
against, and the reference that ``tests/test_tutorial.py`` uses to document
how the tutorial's numbers differ from the correct ones.

Its quirks are kept on purpose (do not "fix" them, the point is fidelity):

* ``conv_`` writes the window that starts at ``(r, c)`` to ``result[r, c]``
  and then crops ``K // 2`` rows and columns off the top-left, so the map is
  the 'valid' cross-correlation shifted up and left by ``K // 2`` pixels (one
  pixel for 3x3 filters); its loop stops at ``H - K/2 - 2``, so the last
  three rows and columns stay zero. It only accepts square, odd filters.
* ``pooling`` loops ``r`` over ``arange(0, H - size - 1, stride)``, which
  drops the last window(s); its output has ``uint16((H - size + 1) /
  stride)`` rows (one fewer than floor-mode pooling when ``H`` is even), and
  it takes each window's maximum over *all* maps at once.
* ``relu`` is three nested loops over every value.

Changes from the article, all outside the loops: the error checks raise
``ValueError`` instead of ``print(...); sys.exit()`` (so that a caller, such
as a test, is not killed); nothing else is changed. The progress prints
("Filter 1", ...) are kept, as the article has them; the benchmark silences
them by redirecting stdout.
"""

import numpy


def conv_(img, conv_filter):
    """One 2-D image with one 2-D (square, odd) filter, as the article loops it."""
    filter_size = conv_filter.shape[0]
    result = numpy.zeros(img.shape)
    for r in numpy.uint16(numpy.arange(filter_size / 2, img.shape[0] - filter_size / 2 - 2)):
        for c in numpy.uint16(numpy.arange(filter_size / 2, img.shape[1] - filter_size / 2 - 2)):
            # the window *starts* at (r, c) but is stored at (r, c): the shift
            curr_region = img[r : r + filter_size, c : c + filter_size]
            curr_result = curr_region * conv_filter
            conv_sum = numpy.sum(curr_result)
            result[r, c] = conv_sum
    final_result = result[
        numpy.uint16(filter_size / 2) : result.shape[0] - numpy.uint16(filter_size / 2),
        numpy.uint16(filter_size / 2) : result.shape[1] - numpy.uint16(filter_size / 2),
    ]
    return final_result


def conv(img, conv_filter):
    """Every filter of the bank over the image; channels summed, as the article does."""
    # The article prints the error and calls sys.exit() in these three checks;
    # here they raise ValueError instead so that importing callers survive.
    if len(img.shape) > 2 or len(conv_filter.shape) > 3:
        if img.shape[-1] != conv_filter.shape[-1]:
            raise ValueError("Error: Number of channels in both image and filter must match.")
    if conv_filter.shape[1] != conv_filter.shape[2]:
        raise ValueError("Error: Filter must be a square matrix. I.e. number of rows and columns must match.")
    if conv_filter.shape[1] % 2 == 0:
        raise ValueError("Error: Filter must have an odd size. I.e. number of rows and columns must be odd.")

    feature_maps = numpy.zeros(
        (img.shape[0] - conv_filter.shape[1] + 1, img.shape[1] - conv_filter.shape[1] + 1, conv_filter.shape[0])
    )
    for filter_num in range(conv_filter.shape[0]):
        print("Filter ", filter_num + 1)
        curr_filter = conv_filter[filter_num, :]
        if len(curr_filter.shape) > 2:
            conv_map = conv_(img[:, :, 0], curr_filter[:, :, 0])
            for ch_num in range(1, curr_filter.shape[-1]):
                conv_map = conv_map + conv_(img[:, :, ch_num], curr_filter[:, :, ch_num])
        else:
            conv_map = conv_(img, curr_filter)
        feature_maps[:, :, filter_num] = conv_map
    return feature_maps


def pooling(feature_map, size=2, stride=2):
    """Max pooling as the article loops it (early stop, max across all maps)."""
    pool_out = numpy.zeros(
        (
            numpy.uint16((feature_map.shape[0] - size + 1) / stride),
            numpy.uint16((feature_map.shape[1] - size + 1) / stride),
            feature_map.shape[-1],
        )
    )
    for map_num in range(feature_map.shape[-1]):
        r2 = 0
        for r in numpy.arange(0, feature_map.shape[0] - size - 1, stride):
            c2 = 0
            for c in numpy.arange(0, feature_map.shape[1] - size - 1, stride):
                # no map_num in the window: the maximum is taken across all maps
                pool_out[r2, c2, map_num] = numpy.max([feature_map[r : r + size, c : c + size]])
                c2 = c2 + 1
            r2 = r2 + 1
    return pool_out


def relu(feature_map):
    """ReLU, one value at a time."""
    relu_out = numpy.zeros(feature_map.shape)
    for map_num in range(feature_map.shape[-1]):
        for r in numpy.arange(0, feature_map.shape[0]):
            for c in numpy.arange(0, feature_map.shape[1]):
                relu_out[r, c, map_num] = numpy.max([feature_map[r, c, map_num], 0])
    return relu_out
