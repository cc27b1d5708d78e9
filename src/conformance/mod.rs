//! One suite over both backends: every test here runs on sled and on
//! PostgreSQL (the PostgreSQL runs need `RELAY_TEST_DATABASE_URL`, which
//! `scripts/test.sh` sets after starting a throwaway server).

mod deliveries;
pub(crate) mod harness;
mod model;
pub(crate) mod store;

/// Declare `name` twice: on sled, and on PostgreSQL (ignored unless asked
/// for, as `scripts/test.sh` does with `--include-ignored`).
macro_rules! on_both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn sled() {
                let h = $crate::conformance::harness::Harness::sled().await;
                super::$body(h).await;
            }

            #[tokio::test]
            #[ignore = "needs PostgreSQL: run scripts/test.sh"]
            async fn postgres() {
                let h = $crate::conformance::harness::Harness::postgres().await;
                super::$body(h).await;
            }
        }
    };
}
pub(crate) use on_both;
