//! STUB — being written (TMF642 alarms → Alarm).
