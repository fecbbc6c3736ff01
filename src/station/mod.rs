//! station (in progress)
