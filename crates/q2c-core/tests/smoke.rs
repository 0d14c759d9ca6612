//! Quick end-to-end stories through the quote-to-cash definition.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use q2c_core::saga::{Outcome, Status};
use support::*;

#[test]
fn happy_path_runs_every_step_then_reports() {
    let mut driver = Driver::start(quote_to_cash());
    for _ in 0..4 {
        driver.succeed_current();
    }
    assert_eq!(driver.saga.status(), Status::Completed);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
    assert_eq!(
        driver.sent_types(),
        [
            "erp.create_order",
            "billing.issue_invoice",
            "payment.collect",
            "salesforce.report_status"
        ]
    );
}

#[test]
fn declined_payment_compensates_in_reverse() {
    let mut driver = Driver::start(quote_to_cash());
    driver.succeed_current();
    driver.succeed_current();
    driver.fail(false);
    assert_eq!(driver.saga.status(), Status::Compensating);
    driver.succeed_current();
    driver.succeed_current();
    assert_eq!(driver.saga.status(), Status::Running);
    driver.succeed_current();
    assert_eq!(driver.saga.status(), Status::Compensated);
    assert_eq!(
        driver.sent_types(),
        [
            "erp.create_order",
            "billing.issue_invoice",
            "payment.collect",
            "billing.void_invoice",
            "erp.cancel_order",
            "salesforce.report_status"
        ]
    );
}
