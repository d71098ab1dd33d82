//! MongoDB Atlas Cost Explorer: an asynchronous, monthly, USD upstream. The wire types, the query body
//! costd sends and the normalization are here; the client and the job table are the next slice.

pub mod normalize;
pub mod wire;
