//! STUB — being written. Owns: message text per language.
