"""Bad examples in real data sets (truncated or mislabelled files): skipped and counted by name,
or raised at the first one.

`guarded_map` runs a per-example function that may fail (a decode error) or report a problem
(an out-of-range label). With `on_error="skip"` failures are dropped inside tf.data and every
dropped example is remembered by name in a `BadDataReport`: each example is numbered by its
position in the input and put in a hash table under (number, name) as it enters, and taken out
by the same map function once every output is computed and its problem is empty (a problem fails
the example like an op error, and `ignore_errors` drops both), so after a full pass the table
holds exactly the examples that were skipped. An endless (repeated) stream has no end of pass:
there the map keeps its input order (`BadDataReport(streaming=True)`) and a step after it records
the number of each example that comes out, so once an example has come out every earlier one
has come out (and left the table) or been dropped, and the report counts the names entered
before the last example that came out: exact at any time, a few examples late. Every instance
has its own key, so no table update depends on another (the pipeline's threads and a reader
never race on an entry).
With `on_error="raise"` the function runs eagerly inside `tf.py_function` so that the first
failure raises an error naming the example (slower: a mode for checking a data set, not for
training on it).
"""

import logging

import tensorflow as tf

ON_ERROR = ("skip", "raise")

log = logging.getLogger("pipelines")


graph_only = tf.autograph.experimental.do_not_convert
"""Marks a map function as plain graph code: tf.data traces it as written instead of first
rewriting it with AutoGraph, whose source-to-source conversion of the whole call tree (the
decode-and-crop recipe: ~40 functions) took about 2 s of the first `get_dataset` call in a
process (2.6-3.1 s from the call to the first batch before, about 1 s now).
Functions under it use `tf.cond` for tensor-dependent branches; a Python `if` on a tensor would
raise at trace time instead of being converted."""


class BadExampleError(ValueError):
    """A bad example met with `on_error="raise"`."""


class Counted:
    """`count` and `warn()` over a report's `names` (each name warned about once)."""

    @property
    def count(self):
        return len(self.names)

    def warn(self):
        """Logs a warning naming each skipped example not reported before; returns the count."""
        names = self.names
        for name in names:
            if name not in self._warned:
                log.warning("skipped bad example %s", name)
                self._warned.add(name)
        return len(names)


class BadDataReport(Counted):
    """The examples a pipeline skipped as bad, by name.

    Args:
        streaming: False (one pass): read it after a full pass over the data (during a pass it
            also holds the examples in flight). True (a repeated stream, its guarded map kept
            in order): it holds only examples known to be skipped, at any time.
    """

    def __init__(self, streaming=False):
        self.streaming = streaming
        self._table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, -1)
        self._last_out = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self._skipped = set()  # streaming: names known skipped (their entries left the table)
        self._warned = set()

    @staticmethod
    def _key(name, serial):
        # The number first: names may contain any character, numbers never contain ":".
        return tf.reshape(tf.strings.join([tf.strings.as_string(serial), name], ":"), [1])

    def enter(self, name, serial):
        """Records example `name` as in flight, entered as number `serial` (its position in the
        input: 0, 1, ...); returns its entry `(key, serial)` once recorded."""
        serial = tf.cast(serial, tf.int64)
        key = self._key(name, serial)
        with tf.control_dependencies([self._table.insert(key, tf.reshape(serial, [1]))]):
            return tf.identity(key), tf.identity(serial)

    def leave(self, entry):
        """The example of `entry` (from `enter`) is whole: takes it out of the table."""
        return self._table.remove(entry[0])

    def came_out(self, serial):
        """Streaming: the example numbered `serial` came out of the ordered map, so every
        earlier one has come out or been dropped."""
        return self._last_out.assign(tf.maximum(self._last_out, serial))

    @property
    def names(self):
        """Sorted names of the examples skipped so far."""
        if not self.streaming:
            keys, _ = self._table.export()
            return sorted({_name_of(k) for k in keys.numpy()})
        # Read the last number out before the table: every example numbered below it has come
        # out (and left the table) or been dropped by then, whatever the pipeline does next.
        last_out = self._last_out.numpy()
        keys, serials = self._table.export()
        done = keys.numpy()[serials.numpy() < last_out]
        if len(done):
            self._skipped.update(_name_of(k) for k in done)
            self._table.remove(tf.constant(done))  # known now: keeps the table small over passes
        return sorted(self._skipped)


def _name_of(key):
    return key.split(b":", 1)[1].decode("utf-8", "replace")


def check_on_error(on_error):
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def guarded_map(dataset, fn, on_error, report=None, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=None):
    """Maps `fn` over a dataset of `(name, *inputs)` elements, skipping or raising on bad ones.

    `fn(*inputs)` returns `(outputs, problem)`: `outputs` a structure of tensors, `problem` a scalar
    string, empty when the example is good (e.g. "label 1200 not in [0, 1000)"). An op error
    inside `fn` (an undecodable image) also marks the example bad. With a streaming `report`
    the map keeps its input order (`deterministic` is then True).

    One map function per example does the bookkeeping (enter, run `fn`, fail on a problem,
    leave), followed by `ignore_errors`: no filter or second map per example (they cost about
    as much CPU per example as the bookkeeping itself); a streaming report adds one ordered step
    that records the number of each example that came out.

    Returns the dataset of `outputs`.
    """
    check_on_error(on_error)
    if on_error == "raise":
        return dataset.map(_raising(fn, dataset.element_spec[1:]),
                           num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    if report is None:
        raise ValueError("on_error='skip' needs a BadDataReport to count skipped examples")

    @graph_only
    def run(position, element):
        name, *inputs = element
        entry = report.enter(name, position)
        # Everything `fn` does depends on the insertion, so an example that fails is recorded.
        with tf.control_dependencies(entry):
            inputs = [tf.identity(i) for i in inputs]
        outputs, problem = fn(*inputs)
        # A problem fails the example as an op error does; only an example whose outputs were
        # all computed leaves the table (a failed op stops everything that depends on it).
        checked = tf.debugging.Assert(tf.equal(problem, ""), [problem])
        with tf.control_dependencies([checked, *tf.nest.flatten(outputs)]):
            left = report.leave(entry)
        with tf.control_dependencies([left]):
            outputs = tf.nest.map_structure(tf.identity, outputs)
        return (outputs, entry[1]) if report.streaming else outputs

    @graph_only
    def came_out(outputs, serial):
        with tf.control_dependencies([report.came_out(serial)]):
            return tf.nest.map_structure(tf.identity, outputs)

    if report.streaming:
        deterministic = True
    dataset = (
        dataset.enumerate()
        .map(run, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
        .ignore_errors()
    )
    return dataset.map(came_out) if report.streaming else dataset


def _raising(fn, input_specs):
    """`fn` run eagerly under `tf.py_function`, raising `BadExampleError` naming the example."""
    traced = tf.function(fn, autograph=False).get_concrete_function(*input_specs)
    structure, _ = traced.structured_outputs
    out_specs = [tf.TensorSpec.from_tensor(o) for o in tf.nest.flatten(structure)]

    def eager(name, *inputs):
        label = name.numpy().decode("utf-8", "replace")
        try:
            outputs, problem = fn(*inputs)
        except tf.errors.OpError as e:
            raise BadExampleError(f"bad example {label}: {e.message}") from None
        if problem.numpy():
            raise BadExampleError(f"bad example {label}: {problem.numpy().decode()}")
        return tf.nest.flatten(outputs)

    @graph_only
    def mapped(name, *inputs):
        outputs = tf.py_function(eager, [name, *inputs], [s.dtype for s in out_specs])
        for o, s in zip(outputs, out_specs):
            o.set_shape(s.shape)
        return tf.nest.pack_sequence_as(structure, outputs)

    return mapped
