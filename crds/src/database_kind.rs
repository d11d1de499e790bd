//! What every part of joc-ha knows about a database product, on the one
//! type for it: the API's `spec.database.type` ([`DatabaseKind`], defined
//! with the other API types in `v1alpha1`, whose serialized form this
//! module does not touch). The operator renders it, the sidecar parses its
//! flag and the URL's scheme with it, the lease and the js7 module choose
//! their SQL by it.

use crate::v1alpha1::DatabaseKind;

impl DatabaseKind {
    pub const ALL: [DatabaseKind; 4] = [
        DatabaseKind::Postgresql,
        DatabaseKind::Mysql,
        DatabaseKind::Mariadb,
        DatabaseKind::Sqlite,
    ];

    /// The API's spelling (`spec.database.type`, the sidecar's
    /// `--database-type`).
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseKind::Postgresql => "postgresql",
            DatabaseKind::Mysql => "mysql",
            DatabaseKind::Mariadb => "mariadb",
            DatabaseKind::Sqlite => "sqlite",
        }
    }

    /// Parses the API's spelling; `postgres` is accepted for `postgresql`.
    pub fn parse(name: &str) -> Option<DatabaseKind> {
        match name {
            "postgres" => Some(DatabaseKind::Postgresql),
            _ => DatabaseKind::ALL
                .into_iter()
                .find(|kind| kind.as_str() == name),
        }
    }

    /// The product a database URL names by its scheme: `postgres://` or
    /// `postgresql://`, `mysql://`, `mariadb://`, `sqlite:`.
    pub fn of_url(url: &str) -> Option<DatabaseKind> {
        let (scheme, _) = url.split_once(':')?;
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Some(DatabaseKind::Postgresql),
            "mysql" => Some(DatabaseKind::Mysql),
            "mariadb" => Some(DatabaseKind::Mariadb),
            "sqlite" => Some(DatabaseKind::Sqlite),
            _ => None,
        }
    }

    /// MySQL or MariaDB: one protocol, one SQL dialect for joc-ha's
    /// statements (and one `mysql://` URL scheme for the client).
    pub fn is_mysql_family(self) -> bool {
        matches!(self, DatabaseKind::Mysql | DatabaseKind::Mariadb)
    }

    /// Whether a database of kind `found` (say, from a URL's scheme) can be
    /// the declared `self`: the same product, or MySQL and MariaDB for each
    /// other (a `mysql://` URL serves MariaDB).
    pub fn accepts(self, found: DatabaseKind) -> bool {
        self == found || (self.is_mysql_family() && found.is_mysql_family())
    }

    /// The folder of the lease's schema under `migrations/`.
    pub fn migrations_dir(self) -> &'static str {
        match self {
            DatabaseKind::Postgresql => "postgres",
            DatabaseKind::Mysql | DatabaseKind::Mariadb => "mysql",
            DatabaseKind::Sqlite => "sqlite",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_match_the_api() {
        for kind in DatabaseKind::ALL {
            let json = serde_json::to_string(&kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(DatabaseKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(
            DatabaseKind::parse("postgres"),
            Some(DatabaseKind::Postgresql)
        );
        assert_eq!(DatabaseKind::parse("oracle"), None);
    }

    #[test]
    fn urls_name_their_product() {
        for (url, kind) in [
            ("postgres://u@h/db", Some(DatabaseKind::Postgresql)),
            ("postgresql://u@h/db", Some(DatabaseKind::Postgresql)),
            ("mysql://u@h/db", Some(DatabaseKind::Mysql)),
            ("MariaDB://u@h/db", Some(DatabaseKind::Mariadb)),
            ("sqlite:///tmp/x.db", Some(DatabaseKind::Sqlite)),
            ("oracle://u@h/db", None),
            ("no scheme", None),
        ] {
            assert_eq!(DatabaseKind::of_url(url), kind, "{url}");
        }
        assert!(DatabaseKind::Mariadb.accepts(DatabaseKind::Mysql));
        assert!(DatabaseKind::Mysql.accepts(DatabaseKind::Mariadb));
        assert!(!DatabaseKind::Postgresql.accepts(DatabaseKind::Mysql));
        assert_eq!(DatabaseKind::Mariadb.migrations_dir(), "mysql");
    }
}
