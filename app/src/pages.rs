//! Pages of the app.

pub mod playground;
