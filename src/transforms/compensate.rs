//! STUB — being written. Owns: credit rules.
