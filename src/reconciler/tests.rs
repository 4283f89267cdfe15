//! The reconciler core under virtual time: inputs in, effects out.
