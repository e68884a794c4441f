//! STUB — being written (ONAP VES 7.x fault events → Alarm).
