//! The macros that run one test body on each backend: SQLite and PostgreSQL (`both_backends!`),
//! S3 storage on either (`s3_tests!`), or all of them (`file_tests!`).

/// Runs each named `async fn(Backend)` as a test on SQLite, and on PostgreSQL when asked.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Runs each named `async fn(Backend)` on S3 storage, on SQLite and on PostgreSQL; the tests
/// need `CARAFE_TEST_S3_URL` (and the PostgreSQL one), so they are ignored without it.
macro_rules! s3_tests {
    ($($name:ident),* $(,)?) => {
        mod s3_sqlite {
            $(
                #[tokio::test]
                #[ignore = "needs CARAFE_TEST_S3_URL"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::S3Sqlite).await
                }
            )*
        }
        mod s3_postgres {
            $(
                #[tokio::test]
                #[ignore = "needs CARAFE_TEST_S3_URL and CARAFE_TEST_POSTGRES_URL"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::S3Postgres).await
                }
            )*
        }
    };
}

/// Runs file tests on both databases, on local disk and on S3: the tests listed first on
/// both storages, those after `local:` on local disk only and those after `s3:` on S3 only
/// (each list says why).
macro_rules! file_tests {
    (
        $($any:ident),* $(,)?
        $(; local: $($local:ident),+ $(,)?)?
        $(; s3: $($s3:ident),+ $(,)?)?
    ) => {
        both_backends!($($any,)* $($($local,)+)?);
        s3_tests!($($any,)* $($($s3,)+)?);
    };
}
