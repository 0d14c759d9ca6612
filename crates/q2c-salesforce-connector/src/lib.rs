//! The Salesforce connector: consumes `salesforce.report_status` commands
//! and writes each workflow's outcome to Salesforce over REST.
//!
//! [`connector`] consumes the commands and answers them; [`writer`] makes
//! one write happen (paced, retried, re-authenticated). Their rules are
//! pure:
//!
//! - [`limits`]: reading `Sforce-Limit-Info` and slowing down as the org's
//!   daily API budget runs low, so q2c never spends what the org's own users
//!   and integrations need;
//! - [`mapping`]: a workflow's outcome as the write Salesforce receives
//!   (the Opportunity, an upserted status record, or a platform event), with
//!   the outcome's time as the ordering number;
//! - [`response`]: what a REST answer means for the write (done, an older
//!   status refused as it should be, worth retrying, a new token, or a
//!   definitive failure carrying Salesforce's message).

pub mod connector;
pub mod limits;
pub mod mapping;
pub mod response;
pub mod writer;
