//! Reusable view components.

pub mod compare;
pub mod compare_layers;
pub mod credits_panel;
pub mod error_view;
pub mod image_input;
pub mod job_card;
pub mod no_jobs;
pub mod param_field;
pub mod settings_panel;
pub mod share_choice;
pub mod snippets_panel;
