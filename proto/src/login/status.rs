//! Login Response status (RFC 7143 §11.13.5): Status-Class and
//! Status-Detail, as an open type that keeps unknown codes.

use crate::pdu::LoginResponse;

/// A Login Response status: class (0 success, 1 redirection, 2 initiator
/// error, 3 target error) and detail.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LoginStatus {
    pub class: u8,
    pub detail: u8,
}

macro_rules! statuses {
    ($( $(#[$m:meta])* $name:ident = ($c:expr, $d:expr, $msg:expr), )*) => {
        impl LoginStatus {
            $( $(#[$m])* pub const $name: LoginStatus = LoginStatus { class: $c, detail: $d }; )*

            /// The RFC's description of a known status.
            pub fn known_message(self) -> Option<&'static str> {
                match (self.class, self.detail) {
                    $( ($c, $d) => Some($msg), )*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    /// 0x0000 "Success".
    SUCCESS = (0, 0, "success"),
    /// 0x0101 "Target moved temporarily": the response carries TargetAddress keys.
    TARGET_MOVED_TEMPORARILY = (1, 1, "target moved temporarily"),
    /// 0x0102 "Target moved permanently".
    TARGET_MOVED_PERMANENTLY = (1, 2, "target moved permanently"),
    /// 0x0200 "Initiator error" (miscellaneous).
    INITIATOR_ERROR = (2, 0, "initiator error"),
    /// 0x0201 "Authentication failure".
    AUTHENTICATION_FAILURE = (2, 1, "authentication failed"),
    /// 0x0202 "Authorization failure".
    AUTHORIZATION_FAILURE = (2, 2, "initiator not authorized to access the target"),
    /// 0x0203 "Not found".
    NOT_FOUND = (2, 3, "target not found"),
    /// 0x0204 "Target removed".
    TARGET_REMOVED = (2, 4, "target removed"),
    /// 0x0205 "Unsupported version".
    UNSUPPORTED_VERSION = (2, 5, "unsupported iSCSI version"),
    /// 0x0206 "Too many connections".
    TOO_MANY_CONNECTIONS = (2, 6, "too many connections in the session"),
    /// 0x0207 "Missing parameter".
    MISSING_PARAMETER = (2, 7, "missing parameter"),
    /// 0x0208 "Can't include in session".
    CANT_INCLUDE_IN_SESSION = (2, 8, "connection cannot be included in the session"),
    /// 0x0209 "Session type not supported".
    SESSION_TYPE_NOT_SUPPORTED = (2, 9, "session type not supported"),
    /// 0x020a "Session does not exist".
    SESSION_DOES_NOT_EXIST = (2, 0x0a, "session does not exist"),
    /// 0x020b "Invalid request type during login".
    INVALID_DURING_LOGIN = (2, 0x0b, "invalid request during login"),
    /// 0x0300 "Target error" (miscellaneous).
    TARGET_ERROR = (3, 0, "target error"),
    /// 0x0301 "Service unavailable".
    SERVICE_UNAVAILABLE = (3, 1, "service unavailable"),
    /// 0x0302 "Out of resources".
    OUT_OF_RESOURCES = (3, 2, "target out of resources"),
}

impl LoginStatus {
    /// The status of a Login Response.
    pub fn of(resp: &LoginResponse) -> LoginStatus {
        LoginStatus {
            class: resp.status_class,
            detail: resp.status_detail,
        }
    }

    /// A human-readable description, also for unknown codes.
    pub fn message(self) -> &'static str {
        self.known_message().unwrap_or(match self.class {
            0 => "success",
            1 => "redirection",
            2 => "initiator error",
            3 => "target error",
            _ => "unknown status class",
        })
    }

    pub fn is_success(self) -> bool {
        self.class == 0
    }

    pub fn is_redirect(self) -> bool {
        self.class == 1
    }

    /// Class 2: the initiator should not retry the same login unchanged.
    pub fn is_initiator_error(self) -> bool {
        self.class == 2
    }

    /// Class 3: the target failed; the login may be retried later.
    pub fn is_target_error(self) -> bool {
        self.class == 3
    }
}

impl core::fmt::Debug for LoginStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "LoginStatus({:#04x}{:02x} {})",
            self.class,
            self.detail,
            self.message()
        )
    }
}

impl core::fmt::Display for LoginStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} (status {:02x}{:02x})",
            self.message(),
            self.class,
            self.detail
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        assert_eq!(
            LoginStatus::SESSION_DOES_NOT_EXIST,
            LoginStatus {
                class: 2,
                detail: 0x0a
            }
        );
        assert_eq!(
            LoginStatus::NOT_FOUND.to_string(),
            "target not found (status 0203)"
        );
        assert!(LoginStatus::TARGET_MOVED_PERMANENTLY.is_redirect());
        assert!(LoginStatus::OUT_OF_RESOURCES.is_target_error());
        let unknown = LoginStatus {
            class: 2,
            detail: 0x7f,
        };
        assert_eq!(unknown.known_message(), None);
        assert_eq!(unknown.message(), "initiator error");
        assert!(unknown.is_initiator_error());
    }
}
