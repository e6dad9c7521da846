//! AMI (Asterisk Manager Interface) client: codec, session and typed actions.
