//! What stands between the network and the services: the accept path (a cap on open connections, a
//! deadline for the HTTP/2 preface), the serving loop (GOAWAY at a connection's maximum age and at
//! close) and admission (a server-wide cap on calls in progress, shedding while the runtime stays
//! behind, and the drain: refusing new calls, ending streams, knowing when nothing is left).

mod admission;
mod incoming;
mod queue_delay;
mod serve;

pub use admission::{Admission, AdmissionLayer, AdmittedBody};
pub use incoming::{Connection, ConnectionLimits, Place, accepted, incoming, with_preface};
pub use queue_delay::QueueDelay;
pub use serve::serve;
