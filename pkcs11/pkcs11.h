/*
 * pkcs11.h - the Cryptoki interface as kmip2pkcs11 uses it.
 *
 * Written for this project from the OASIS PKCS #11 Cryptographic Token Interface Base
 * Specification, versions 2.40 and 3.0: the type layouts, constant values and the order of
 * the functions in CK_FUNCTION_LIST / CK_FUNCTION_LIST_3_0 are those the specification
 * fixes (they are the ABI every module implements).  It is not a complete header: it holds
 * what a client of a module needs - all return values, the object classes, key types,
 * attributes and mechanisms for RSA, EC and EdDSA signing keys, and both function lists.
 *
 * Platform conventions (specification section 2, "Cryptoki on Unix"): structures use the
 * compiler's default alignment (no #pragma pack), CK_ULONG is unsigned long, functions use
 * the default calling convention and a NULL_PTR is 0.
 *
 * SPDX-License-Identifier: BSD-3-Clause
 */
#ifndef K2P_PKCS11_H
#define K2P_PKCS11_H

#ifdef __cplusplus
extern "C" {
#endif

/* ---- basic types ----------------------------------------------------------------------- */

typedef unsigned char CK_BYTE;
typedef CK_BYTE CK_CHAR;          /* padded with blanks, not NUL-terminated */
typedef CK_BYTE CK_UTF8CHAR;      /* likewise */
typedef CK_BYTE CK_BBOOL;
typedef unsigned long CK_ULONG;   /* at least 32 bits; the platform's unsigned long */
typedef long CK_LONG;
typedef CK_ULONG CK_FLAGS;

typedef CK_BYTE *CK_BYTE_PTR;
typedef CK_CHAR *CK_CHAR_PTR;
typedef CK_UTF8CHAR *CK_UTF8CHAR_PTR;
typedef CK_ULONG *CK_ULONG_PTR;
typedef void *CK_VOID_PTR;
typedef CK_VOID_PTR *CK_VOID_PTR_PTR;

#ifndef NULL_PTR
#define NULL_PTR 0
#endif

#define CK_FALSE 0
#define CK_TRUE  1

#define CK_UNAVAILABLE_INFORMATION (~0UL)
#define CK_EFFECTIVELY_INFINITE    0UL
#define CK_INVALID_HANDLE          0UL

typedef CK_ULONG CK_NOTIFICATION;
#define CKN_SURRENDER   0UL
#define CKN_OTP_CHANGED 1UL

typedef CK_ULONG CK_SLOT_ID;
typedef CK_SLOT_ID *CK_SLOT_ID_PTR;
typedef CK_ULONG CK_SESSION_HANDLE;
typedef CK_SESSION_HANDLE *CK_SESSION_HANDLE_PTR;
typedef CK_ULONG CK_OBJECT_HANDLE;
typedef CK_OBJECT_HANDLE *CK_OBJECT_HANDLE_PTR;
typedef CK_ULONG CK_OBJECT_CLASS;
typedef CK_OBJECT_CLASS *CK_OBJECT_CLASS_PTR;
typedef CK_ULONG CK_KEY_TYPE;
typedef CK_ULONG CK_CERTIFICATE_TYPE;
typedef CK_ULONG CK_ATTRIBUTE_TYPE;
typedef CK_ULONG CK_MECHANISM_TYPE;
typedef CK_MECHANISM_TYPE *CK_MECHANISM_TYPE_PTR;
typedef CK_ULONG CK_USER_TYPE;
typedef CK_ULONG CK_STATE;
typedef CK_ULONG CK_RV;
typedef CK_ULONG CK_RSA_PKCS_MGF_TYPE;
typedef CK_ULONG CK_PROFILE_ID;

/* ---- structures ------------------------------------------------------------------------ */

typedef struct CK_VERSION {
	CK_BYTE major;
	CK_BYTE minor;
} CK_VERSION;
typedef CK_VERSION *CK_VERSION_PTR;

typedef struct CK_INFO {
	CK_VERSION cryptokiVersion;
	CK_UTF8CHAR manufacturerID[32];
	CK_FLAGS flags;                  /* reserved, 0 */
	CK_UTF8CHAR libraryDescription[32];
	CK_VERSION libraryVersion;
} CK_INFO;
typedef CK_INFO *CK_INFO_PTR;

typedef struct CK_SLOT_INFO {
	CK_UTF8CHAR slotDescription[64];
	CK_UTF8CHAR manufacturerID[32];
	CK_FLAGS flags;
	CK_VERSION hardwareVersion;
	CK_VERSION firmwareVersion;
} CK_SLOT_INFO;
typedef CK_SLOT_INFO *CK_SLOT_INFO_PTR;

typedef struct CK_TOKEN_INFO {
	CK_UTF8CHAR label[32];
	CK_UTF8CHAR manufacturerID[32];
	CK_UTF8CHAR model[16];
	CK_CHAR serialNumber[16];
	CK_FLAGS flags;
	CK_ULONG ulMaxSessionCount;
	CK_ULONG ulSessionCount;
	CK_ULONG ulMaxRwSessionCount;
	CK_ULONG ulRwSessionCount;
	CK_ULONG ulMaxPinLen;
	CK_ULONG ulMinPinLen;
	CK_ULONG ulTotalPublicMemory;
	CK_ULONG ulFreePublicMemory;
	CK_ULONG ulTotalPrivateMemory;
	CK_ULONG ulFreePrivateMemory;
	CK_VERSION hardwareVersion;
	CK_VERSION firmwareVersion;
	CK_CHAR utcTime[16];
} CK_TOKEN_INFO;
typedef CK_TOKEN_INFO *CK_TOKEN_INFO_PTR;

typedef struct CK_SESSION_INFO {
	CK_SLOT_ID slotID;
	CK_STATE state;
	CK_FLAGS flags;
	CK_ULONG ulDeviceError;
} CK_SESSION_INFO;
typedef CK_SESSION_INFO *CK_SESSION_INFO_PTR;

typedef struct CK_ATTRIBUTE {
	CK_ATTRIBUTE_TYPE type;
	CK_VOID_PTR pValue;
	CK_ULONG ulValueLen;             /* bytes; CK_UNAVAILABLE_INFORMATION on failure */
} CK_ATTRIBUTE;
typedef CK_ATTRIBUTE *CK_ATTRIBUTE_PTR;

typedef struct CK_DATE {
	CK_CHAR year[4];
	CK_CHAR month[2];
	CK_CHAR day[2];
} CK_DATE;

typedef struct CK_MECHANISM {
	CK_MECHANISM_TYPE mechanism;
	CK_VOID_PTR pParameter;
	CK_ULONG ulParameterLen;
} CK_MECHANISM;
typedef CK_MECHANISM *CK_MECHANISM_PTR;

typedef struct CK_MECHANISM_INFO {
	CK_ULONG ulMinKeySize;
	CK_ULONG ulMaxKeySize;
	CK_FLAGS flags;
} CK_MECHANISM_INFO;
typedef CK_MECHANISM_INFO *CK_MECHANISM_INFO_PTR;

typedef struct CK_RSA_PKCS_PSS_PARAMS {
	CK_MECHANISM_TYPE hashAlg;
	CK_RSA_PKCS_MGF_TYPE mgf;
	CK_ULONG sLen;
} CK_RSA_PKCS_PSS_PARAMS;
typedef CK_RSA_PKCS_PSS_PARAMS *CK_RSA_PKCS_PSS_PARAMS_PTR;

/* 3.0: parameters of CKM_EDDSA; absent (pParameter NULL) means plain Ed25519. */
typedef struct CK_EDDSA_PARAMS {
	CK_BBOOL phFlag;
	CK_ULONG ulContextDataLen;
	CK_BYTE_PTR pContextData;
} CK_EDDSA_PARAMS;
typedef CK_EDDSA_PARAMS *CK_EDDSA_PARAMS_PTR;

/* Application-supplied mutex callbacks of C_Initialize. */
typedef CK_RV (*CK_CREATEMUTEX)(CK_VOID_PTR_PTR ppMutex);
typedef CK_RV (*CK_DESTROYMUTEX)(CK_VOID_PTR pMutex);
typedef CK_RV (*CK_LOCKMUTEX)(CK_VOID_PTR pMutex);
typedef CK_RV (*CK_UNLOCKMUTEX)(CK_VOID_PTR pMutex);

typedef struct CK_C_INITIALIZE_ARGS {
	CK_CREATEMUTEX CreateMutex;
	CK_DESTROYMUTEX DestroyMutex;
	CK_LOCKMUTEX LockMutex;
	CK_UNLOCKMUTEX UnlockMutex;
	CK_FLAGS flags;
	CK_VOID_PTR pReserved;           /* must be NULL */
} CK_C_INITIALIZE_ARGS;
typedef CK_C_INITIALIZE_ARGS *CK_C_INITIALIZE_ARGS_PTR;

/* Surrender callback of C_OpenSession. */
typedef CK_RV (*CK_NOTIFY)(CK_SESSION_HANDLE hSession, CK_NOTIFICATION event,
                           CK_VOID_PTR pApplication);

/* ---- flags ----------------------------------------------------------------------------- */

/* CK_SLOT_INFO.flags */
#define CKF_TOKEN_PRESENT                 0x00000001UL
#define CKF_REMOVABLE_DEVICE              0x00000002UL
#define CKF_HW_SLOT                       0x00000004UL

/* CK_TOKEN_INFO.flags */
#define CKF_RNG                           0x00000001UL
#define CKF_WRITE_PROTECTED               0x00000002UL
#define CKF_LOGIN_REQUIRED                0x00000004UL
#define CKF_USER_PIN_INITIALIZED          0x00000008UL
#define CKF_RESTORE_KEY_NOT_NEEDED        0x00000020UL
#define CKF_CLOCK_ON_TOKEN                0x00000040UL
#define CKF_PROTECTED_AUTHENTICATION_PATH 0x00000100UL
#define CKF_DUAL_CRYPTO_OPERATIONS        0x00000200UL
#define CKF_TOKEN_INITIALIZED             0x00000400UL
#define CKF_SECONDARY_AUTHENTICATION      0x00000800UL
#define CKF_USER_PIN_COUNT_LOW            0x00010000UL
#define CKF_USER_PIN_FINAL_TRY            0x00020000UL
#define CKF_USER_PIN_LOCKED               0x00040000UL
#define CKF_USER_PIN_TO_BE_CHANGED        0x00080000UL
#define CKF_SO_PIN_COUNT_LOW              0x00100000UL
#define CKF_SO_PIN_FINAL_TRY              0x00200000UL
#define CKF_SO_PIN_LOCKED                 0x00400000UL
#define CKF_SO_PIN_TO_BE_CHANGED          0x00800000UL
#define CKF_ERROR_STATE                   0x01000000UL

/* CK_SESSION_INFO.flags, C_OpenSession */
#define CKF_RW_SESSION                    0x00000002UL
#define CKF_SERIAL_SESSION                0x00000004UL

/* CK_C_INITIALIZE_ARGS.flags */
#define CKF_LIBRARY_CANT_CREATE_OS_THREADS 0x00000001UL
#define CKF_OS_LOCKING_OK                 0x00000002UL

/* C_WaitForSlotEvent */
#define CKF_DONT_BLOCK                    0x00000001UL

/* CK_MECHANISM_INFO.flags */
#define CKF_HW                            0x00000001UL
#define CKF_MESSAGE_ENCRYPT               0x00000002UL
#define CKF_MESSAGE_DECRYPT               0x00000004UL
#define CKF_MESSAGE_SIGN                  0x00000008UL
#define CKF_MESSAGE_VERIFY                0x00000010UL
#define CKF_MULTI_MESSAGE                 0x00000020UL
#define CKF_FIND_OBJECTS                  0x00000040UL
#define CKF_ENCRYPT                       0x00000100UL
#define CKF_DECRYPT                       0x00000200UL
#define CKF_DIGEST                        0x00000400UL
#define CKF_SIGN                          0x00000800UL
#define CKF_SIGN_RECOVER                  0x00001000UL
#define CKF_VERIFY                        0x00002000UL
#define CKF_VERIFY_RECOVER                0x00004000UL
#define CKF_GENERATE                      0x00008000UL
#define CKF_GENERATE_KEY_PAIR             0x00010000UL
#define CKF_WRAP                          0x00020000UL
#define CKF_UNWRAP                        0x00040000UL
#define CKF_DERIVE                        0x00080000UL
#define CKF_EC_F_P                        0x00100000UL
#define CKF_EC_F_2M                       0x00200000UL
#define CKF_EC_ECPARAMETERS               0x00400000UL
#define CKF_EC_OID                        0x00800000UL
#define CKF_EC_NAMEDCURVE                 CKF_EC_OID   /* the 2.40 name */
#define CKF_EC_UNCOMPRESS                 0x01000000UL
#define CKF_EC_COMPRESS                   0x02000000UL
#define CKF_EC_CURVENAME                  0x04000000UL
#define CKF_EXTENSION                     0x80000000UL

/* Attribute types whose value is an array of attributes */
#define CKF_ARRAY_ATTRIBUTE               0x40000000UL

/* CK_INTERFACE.flags (3.0) */
#define CKF_INTERFACE_FORK_SAFE           0x00000001UL

/* C_EncryptMessageNext and friends (3.0) */
#define CKF_END_OF_MESSAGE                0x00000001UL

/* ---- user types and session states ----------------------------------------------------- */

#define CKU_SO                0UL
#define CKU_USER              1UL
#define CKU_CONTEXT_SPECIFIC  2UL

#define CKS_RO_PUBLIC_SESSION 0UL
#define CKS_RO_USER_FUNCTIONS 1UL
#define CKS_RW_PUBLIC_SESSION 2UL
#define CKS_RW_USER_FUNCTIONS 3UL
#define CKS_RW_SO_FUNCTIONS   4UL

/* ---- object classes -------------------------------------------------------------------- */

#define CKO_DATA              0x00000000UL
#define CKO_CERTIFICATE       0x00000001UL
#define CKO_PUBLIC_KEY        0x00000002UL
#define CKO_PRIVATE_KEY       0x00000003UL
#define CKO_SECRET_KEY        0x00000004UL
#define CKO_HW_FEATURE        0x00000005UL
#define CKO_DOMAIN_PARAMETERS 0x00000006UL
#define CKO_MECHANISM         0x00000007UL
#define CKO_OTP_KEY           0x00000008UL
#define CKO_PROFILE           0x00000009UL
#define CKO_VENDOR_DEFINED    0x80000000UL

/* ---- key types ------------------------------------------------------------------------- */

#define CKK_RSA               0x00000000UL
#define CKK_DSA               0x00000001UL
#define CKK_DH                0x00000002UL
#define CKK_EC                0x00000003UL
#define CKK_ECDSA             CKK_EC        /* deprecated name */
#define CKK_X9_42_DH          0x00000004UL
#define CKK_KEA               0x00000005UL
#define CKK_GENERIC_SECRET    0x00000010UL
#define CKK_DES3              0x00000015UL
#define CKK_AES               0x0000001FUL
#define CKK_EC_EDWARDS        0x00000040UL
#define CKK_EC_MONTGOMERY     0x00000041UL
#define CKK_VENDOR_DEFINED    0x80000000UL

/* ---- attributes ------------------------------------------------------------------------ */

#define CKA_CLASS             0x00000000UL
#define CKA_TOKEN             0x00000001UL
#define CKA_PRIVATE           0x00000002UL
#define CKA_LABEL             0x00000003UL
#define CKA_UNIQUE_ID         0x00000004UL
#define CKA_APPLICATION       0x00000010UL
#define CKA_VALUE             0x00000011UL
#define CKA_OBJECT_ID         0x00000012UL
#define CKA_CERTIFICATE_TYPE  0x00000080UL
#define CKA_ISSUER            0x00000081UL
#define CKA_SERIAL_NUMBER     0x00000082UL
#define CKA_TRUSTED           0x00000086UL
#define CKA_KEY_TYPE          0x00000100UL
#define CKA_SUBJECT           0x00000101UL
#define CKA_ID                0x00000102UL
#define CKA_SENSITIVE         0x00000103UL
#define CKA_ENCRYPT           0x00000104UL
#define CKA_DECRYPT           0x00000105UL
#define CKA_WRAP              0x00000106UL
#define CKA_UNWRAP            0x00000107UL
#define CKA_SIGN              0x00000108UL
#define CKA_SIGN_RECOVER      0x00000109UL
#define CKA_VERIFY            0x0000010AUL
#define CKA_VERIFY_RECOVER    0x0000010BUL
#define CKA_DERIVE            0x0000010CUL
#define CKA_START_DATE        0x00000110UL
#define CKA_END_DATE          0x00000111UL
#define CKA_MODULUS           0x00000120UL
#define CKA_MODULUS_BITS      0x00000121UL
#define CKA_PUBLIC_EXPONENT   0x00000122UL
#define CKA_PRIVATE_EXPONENT  0x00000123UL
#define CKA_PRIME_1           0x00000124UL
#define CKA_PRIME_2           0x00000125UL
#define CKA_EXPONENT_1        0x00000126UL
#define CKA_EXPONENT_2        0x00000127UL
#define CKA_COEFFICIENT       0x00000128UL
#define CKA_PUBLIC_KEY_INFO   0x00000129UL
#define CKA_VALUE_LEN         0x00000161UL
#define CKA_EXTRACTABLE       0x00000162UL
#define CKA_LOCAL             0x00000163UL
#define CKA_NEVER_EXTRACTABLE 0x00000164UL
#define CKA_ALWAYS_SENSITIVE  0x00000165UL
#define CKA_KEY_GEN_MECHANISM 0x00000166UL
#define CKA_MODIFIABLE        0x00000170UL
#define CKA_COPYABLE          0x00000171UL
#define CKA_DESTROYABLE       0x00000172UL
#define CKA_EC_PARAMS         0x00000180UL
#define CKA_ECDSA_PARAMS      CKA_EC_PARAMS /* deprecated name */
#define CKA_EC_POINT          0x00000181UL
#define CKA_ALWAYS_AUTHENTICATE 0x00000202UL
#define CKA_WRAP_WITH_TRUSTED 0x00000210UL
#define CKA_WRAP_TEMPLATE     (CKF_ARRAY_ATTRIBUTE | 0x00000211UL)
#define CKA_UNWRAP_TEMPLATE   (CKF_ARRAY_ATTRIBUTE | 0x00000212UL)
#define CKA_DERIVE_TEMPLATE   (CKF_ARRAY_ATTRIBUTE | 0x00000213UL)
#define CKA_ALLOWED_MECHANISMS (CKF_ARRAY_ATTRIBUTE | 0x00000600UL)
#define CKA_VENDOR_DEFINED    0x80000000UL

/* ---- mechanisms ------------------------------------------------------------------------ */

#define CKM_RSA_PKCS_KEY_PAIR_GEN   0x00000000UL
#define CKM_RSA_PKCS                0x00000001UL
#define CKM_RSA_9796                0x00000002UL
#define CKM_RSA_X_509               0x00000003UL
#define CKM_SHA1_RSA_PKCS           0x00000006UL
#define CKM_RSA_PKCS_OAEP           0x00000009UL
#define CKM_RSA_PKCS_PSS            0x0000000DUL
#define CKM_SHA1_RSA_PKCS_PSS       0x0000000EUL
#define CKM_SHA256_RSA_PKCS         0x00000040UL
#define CKM_SHA384_RSA_PKCS         0x00000041UL
#define CKM_SHA512_RSA_PKCS         0x00000042UL
#define CKM_SHA256_RSA_PKCS_PSS     0x00000043UL
#define CKM_SHA384_RSA_PKCS_PSS     0x00000044UL
#define CKM_SHA512_RSA_PKCS_PSS     0x00000045UL
#define CKM_SHA224_RSA_PKCS         0x00000046UL
#define CKM_SHA224_RSA_PKCS_PSS     0x00000047UL
#define CKM_SHA_1                   0x00000220UL
#define CKM_SHA256                  0x00000250UL
#define CKM_SHA224                  0x00000255UL
#define CKM_SHA384                  0x00000260UL
#define CKM_SHA512                  0x00000270UL
#define CKM_GENERIC_SECRET_KEY_GEN  0x00000350UL
#define CKM_EC_KEY_PAIR_GEN         0x00001040UL
#define CKM_ECDSA_KEY_PAIR_GEN      CKM_EC_KEY_PAIR_GEN /* deprecated name */
#define CKM_ECDSA                   0x00001041UL
#define CKM_ECDSA_SHA1              0x00001042UL
#define CKM_ECDSA_SHA224            0x00001043UL
#define CKM_ECDSA_SHA256            0x00001044UL
#define CKM_ECDSA_SHA384            0x00001045UL
#define CKM_ECDSA_SHA512            0x00001046UL
#define CKM_ECDH1_DERIVE            0x00001050UL
#define CKM_EC_EDWARDS_KEY_PAIR_GEN 0x00001055UL
#define CKM_EC_MONTGOMERY_KEY_PAIR_GEN 0x00001056UL
#define CKM_EDDSA                   0x00001057UL
#define CKM_AES_KEY_GEN             0x00001080UL
#define CKM_VENDOR_DEFINED          0x80000000UL

/* CK_RSA_PKCS_MGF_TYPE */
#define CKG_MGF1_SHA1               0x00000001UL
#define CKG_MGF1_SHA256             0x00000002UL
#define CKG_MGF1_SHA384             0x00000003UL
#define CKG_MGF1_SHA512             0x00000004UL
#define CKG_MGF1_SHA224             0x00000005UL

/* ---- return values (all of base specification 3.0, section 5.1) ----------------------- */

#define CKR_OK                                0x00000000UL
#define CKR_CANCEL                            0x00000001UL
#define CKR_HOST_MEMORY                       0x00000002UL
#define CKR_SLOT_ID_INVALID                   0x00000003UL
#define CKR_GENERAL_ERROR                     0x00000005UL
#define CKR_FUNCTION_FAILED                   0x00000006UL
#define CKR_ARGUMENTS_BAD                     0x00000007UL
#define CKR_NO_EVENT                          0x00000008UL
#define CKR_NEED_TO_CREATE_THREADS            0x00000009UL
#define CKR_CANT_LOCK                         0x0000000AUL
#define CKR_ATTRIBUTE_READ_ONLY               0x00000010UL
#define CKR_ATTRIBUTE_SENSITIVE               0x00000011UL
#define CKR_ATTRIBUTE_TYPE_INVALID            0x00000012UL
#define CKR_ATTRIBUTE_VALUE_INVALID           0x00000013UL
#define CKR_ACTION_PROHIBITED                 0x0000001BUL
#define CKR_DATA_INVALID                      0x00000020UL
#define CKR_DATA_LEN_RANGE                    0x00000021UL
#define CKR_DEVICE_ERROR                      0x00000030UL
#define CKR_DEVICE_MEMORY                     0x00000031UL
#define CKR_DEVICE_REMOVED                    0x00000032UL
#define CKR_ENCRYPTED_DATA_INVALID            0x00000040UL
#define CKR_ENCRYPTED_DATA_LEN_RANGE          0x00000041UL
#define CKR_AEAD_DECRYPT_FAILED               0x00000042UL
#define CKR_FUNCTION_CANCELED                 0x00000050UL
#define CKR_FUNCTION_NOT_PARALLEL             0x00000051UL
#define CKR_FUNCTION_NOT_SUPPORTED            0x00000054UL
#define CKR_KEY_HANDLE_INVALID                0x00000060UL
#define CKR_KEY_SIZE_RANGE                    0x00000062UL
#define CKR_KEY_TYPE_INCONSISTENT             0x00000063UL
#define CKR_KEY_NOT_NEEDED                    0x00000064UL
#define CKR_KEY_CHANGED                       0x00000065UL
#define CKR_KEY_NEEDED                        0x00000066UL
#define CKR_KEY_INDIGESTIBLE                  0x00000067UL
#define CKR_KEY_FUNCTION_NOT_PERMITTED        0x00000068UL
#define CKR_KEY_NOT_WRAPPABLE                 0x00000069UL
#define CKR_KEY_UNEXTRACTABLE                 0x0000006AUL
#define CKR_MECHANISM_INVALID                 0x00000070UL
#define CKR_MECHANISM_PARAM_INVALID           0x00000071UL
#define CKR_OBJECT_HANDLE_INVALID             0x00000082UL
#define CKR_OPERATION_ACTIVE                  0x00000090UL
#define CKR_OPERATION_NOT_INITIALIZED         0x00000091UL
#define CKR_PIN_INCORRECT                     0x000000A0UL
#define CKR_PIN_INVALID                       0x000000A1UL
#define CKR_PIN_LEN_RANGE                     0x000000A2UL
#define CKR_PIN_EXPIRED                       0x000000A3UL
#define CKR_PIN_LOCKED                        0x000000A4UL
#define CKR_SESSION_CLOSED                    0x000000B0UL
#define CKR_SESSION_COUNT                     0x000000B1UL
#define CKR_SESSION_HANDLE_INVALID            0x000000B3UL
#define CKR_SESSION_PARALLEL_NOT_SUPPORTED    0x000000B4UL
#define CKR_SESSION_READ_ONLY                 0x000000B5UL
#define CKR_SESSION_EXISTS                    0x000000B6UL
#define CKR_SESSION_READ_ONLY_EXISTS          0x000000B7UL
#define CKR_SESSION_READ_WRITE_SO_EXISTS      0x000000B8UL
#define CKR_SIGNATURE_INVALID                 0x000000C0UL
#define CKR_SIGNATURE_LEN_RANGE               0x000000C1UL
#define CKR_TEMPLATE_INCOMPLETE               0x000000D0UL
#define CKR_TEMPLATE_INCONSISTENT             0x000000D1UL
#define CKR_TOKEN_NOT_PRESENT                 0x000000E0UL
#define CKR_TOKEN_NOT_RECOGNIZED              0x000000E1UL
#define CKR_TOKEN_WRITE_PROTECTED             0x000000E2UL
#define CKR_UNWRAPPING_KEY_HANDLE_INVALID     0x000000F0UL
#define CKR_UNWRAPPING_KEY_SIZE_RANGE         0x000000F1UL
#define CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT  0x000000F2UL
#define CKR_USER_ALREADY_LOGGED_IN            0x00000100UL
#define CKR_USER_NOT_LOGGED_IN                0x00000101UL
#define CKR_USER_PIN_NOT_INITIALIZED          0x00000102UL
#define CKR_USER_TYPE_INVALID                 0x00000103UL
#define CKR_USER_ANOTHER_ALREADY_LOGGED_IN    0x00000104UL
#define CKR_USER_TOO_MANY_TYPES               0x00000105UL
#define CKR_WRAPPED_KEY_INVALID               0x00000110UL
#define CKR_WRAPPED_KEY_LEN_RANGE             0x00000112UL
#define CKR_WRAPPING_KEY_HANDLE_INVALID       0x00000113UL
#define CKR_WRAPPING_KEY_SIZE_RANGE           0x00000114UL
#define CKR_WRAPPING_KEY_TYPE_INCONSISTENT    0x00000115UL
#define CKR_RANDOM_SEED_NOT_SUPPORTED         0x00000120UL
#define CKR_RANDOM_NO_RNG                     0x00000121UL
#define CKR_DOMAIN_PARAMS_INVALID             0x00000130UL
#define CKR_CURVE_NOT_SUPPORTED               0x00000140UL
#define CKR_BUFFER_TOO_SMALL                  0x00000150UL
#define CKR_SAVED_STATE_INVALID               0x00000160UL
#define CKR_INFORMATION_SENSITIVE             0x00000170UL
#define CKR_STATE_UNSAVEABLE                  0x00000180UL
#define CKR_CRYPTOKI_NOT_INITIALIZED          0x00000190UL
#define CKR_CRYPTOKI_ALREADY_INITIALIZED      0x00000191UL
#define CKR_MUTEX_BAD                         0x000001A0UL
#define CKR_MUTEX_NOT_LOCKED                  0x000001A1UL
#define CKR_NEW_PIN_MODE                      0x000001B0UL
#define CKR_NEXT_OTP                          0x000001B1UL
#define CKR_EXCEEDED_MAX_ITERATIONS           0x000001B5UL
#define CKR_FIPS_SELF_TEST_FAILED             0x000001B6UL
#define CKR_LIBRARY_LOAD_FAILED               0x000001B7UL
#define CKR_PIN_TOO_WEAK                      0x000001B8UL
#define CKR_PUBLIC_KEY_INVALID                0x000001B9UL
#define CKR_FUNCTION_REJECTED                 0x00000200UL
#define CKR_TOKEN_RESOURCE_EXCEEDED           0x00000201UL
#define CKR_OPERATION_CANCEL_FAILED           0x00000202UL
#define CKR_VENDOR_DEFINED                    0x80000000UL

/* ---- function prototypes as pointer types ---------------------------------------------- */

/*
 * One pointer type per function, CK_C_<name>, named as the specification's pkcs11f list
 * does.  The order of this list is irrelevant; the order of the members of the function
 * lists below is the ABI.
 */
struct CK_FUNCTION_LIST;
struct CK_FUNCTION_LIST_3_0;
struct CK_INTERFACE;
typedef struct CK_FUNCTION_LIST CK_FUNCTION_LIST;
typedef CK_FUNCTION_LIST *CK_FUNCTION_LIST_PTR;
typedef CK_FUNCTION_LIST_PTR *CK_FUNCTION_LIST_PTR_PTR;
typedef struct CK_FUNCTION_LIST_3_0 CK_FUNCTION_LIST_3_0;
typedef CK_FUNCTION_LIST_3_0 *CK_FUNCTION_LIST_3_0_PTR;
typedef CK_FUNCTION_LIST_3_0_PTR *CK_FUNCTION_LIST_3_0_PTR_PTR;

/* 3.0: a named interface; pFunctionList points at a CK_FUNCTION_LIST_3_0 for "PKCS 11". */
typedef struct CK_INTERFACE {
	CK_CHAR *pInterfaceName;
	CK_VOID_PTR pFunctionList;
	CK_FLAGS flags;
} CK_INTERFACE;
typedef CK_INTERFACE *CK_INTERFACE_PTR;
typedef CK_INTERFACE_PTR *CK_INTERFACE_PTR_PTR;

#define K2P_H CK_SESSION_HANDLE
#define K2P_O CK_OBJECT_HANDLE

/* general purpose */
typedef CK_RV (*CK_C_Initialize)(CK_VOID_PTR pInitArgs);
typedef CK_RV (*CK_C_Finalize)(CK_VOID_PTR pReserved);
typedef CK_RV (*CK_C_GetInfo)(CK_INFO_PTR pInfo);
typedef CK_RV (*CK_C_GetFunctionList)(CK_FUNCTION_LIST_PTR_PTR ppFunctionList);
/* slot and token management */
typedef CK_RV (*CK_C_GetSlotList)(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList,
                                  CK_ULONG_PTR pulCount);
typedef CK_RV (*CK_C_GetSlotInfo)(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo);
typedef CK_RV (*CK_C_GetTokenInfo)(CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo);
typedef CK_RV (*CK_C_GetMechanismList)(CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pMechanismList,
                                       CK_ULONG_PTR pulCount);
typedef CK_RV (*CK_C_GetMechanismInfo)(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type,
                                       CK_MECHANISM_INFO_PTR pInfo);
typedef CK_RV (*CK_C_InitToken)(CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen,
                                CK_UTF8CHAR_PTR pLabel);
typedef CK_RV (*CK_C_InitPIN)(K2P_H hSession, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen);
typedef CK_RV (*CK_C_SetPIN)(K2P_H hSession, CK_UTF8CHAR_PTR pOldPin, CK_ULONG ulOldLen,
                             CK_UTF8CHAR_PTR pNewPin, CK_ULONG ulNewLen);
/* session management */
typedef CK_RV (*CK_C_OpenSession)(CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication,
                                  CK_NOTIFY Notify, CK_SESSION_HANDLE_PTR phSession);
typedef CK_RV (*CK_C_CloseSession)(K2P_H hSession);
typedef CK_RV (*CK_C_CloseAllSessions)(CK_SLOT_ID slotID);
typedef CK_RV (*CK_C_GetSessionInfo)(K2P_H hSession, CK_SESSION_INFO_PTR pInfo);
typedef CK_RV (*CK_C_GetOperationState)(K2P_H hSession, CK_BYTE_PTR pOperationState,
                                        CK_ULONG_PTR pulOperationStateLen);
typedef CK_RV (*CK_C_SetOperationState)(K2P_H hSession, CK_BYTE_PTR pOperationState,
                                        CK_ULONG ulOperationStateLen, K2P_O hEncryptionKey,
                                        K2P_O hAuthenticationKey);
typedef CK_RV (*CK_C_Login)(K2P_H hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin,
                            CK_ULONG ulPinLen);
typedef CK_RV (*CK_C_Logout)(K2P_H hSession);
/* object management */
typedef CK_RV (*CK_C_CreateObject)(K2P_H hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                                   CK_OBJECT_HANDLE_PTR phObject);
typedef CK_RV (*CK_C_CopyObject)(K2P_H hSession, K2P_O hObject, CK_ATTRIBUTE_PTR pTemplate,
                                 CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phNewObject);
typedef CK_RV (*CK_C_DestroyObject)(K2P_H hSession, K2P_O hObject);
typedef CK_RV (*CK_C_GetObjectSize)(K2P_H hSession, K2P_O hObject, CK_ULONG_PTR pulSize);
typedef CK_RV (*CK_C_GetAttributeValue)(K2P_H hSession, K2P_O hObject,
                                        CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount);
typedef CK_RV (*CK_C_SetAttributeValue)(K2P_H hSession, K2P_O hObject,
                                        CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount);
typedef CK_RV (*CK_C_FindObjectsInit)(K2P_H hSession, CK_ATTRIBUTE_PTR pTemplate,
                                      CK_ULONG ulCount);
typedef CK_RV (*CK_C_FindObjects)(K2P_H hSession, CK_OBJECT_HANDLE_PTR phObject,
                                  CK_ULONG ulMaxObjectCount, CK_ULONG_PTR pulObjectCount);
typedef CK_RV (*CK_C_FindObjectsFinal)(K2P_H hSession);
/* encryption, decryption, digesting, signing, verifying: Init / single / Update / Final */
typedef CK_RV (*CK_C_EncryptInit)(K2P_H hSession, CK_MECHANISM_PTR pMechanism, K2P_O hKey);
typedef CK_RV (*CK_C_Encrypt)(K2P_H hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                              CK_BYTE_PTR pEncryptedData, CK_ULONG_PTR pulEncryptedDataLen);
typedef CK_RV (*CK_C_EncryptUpdate)(K2P_H hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                                    CK_BYTE_PTR pEncryptedPart,
                                    CK_ULONG_PTR pulEncryptedPartLen);
typedef CK_RV (*CK_C_EncryptFinal)(K2P_H hSession, CK_BYTE_PTR pLastEncryptedPart,
                                   CK_ULONG_PTR pulLastEncryptedPartLen);
typedef CK_RV (*CK_C_DecryptInit)(K2P_H hSession, CK_MECHANISM_PTR pMechanism, K2P_O hKey);
typedef CK_RV (*CK_C_Decrypt)(K2P_H hSession, CK_BYTE_PTR pEncryptedData,
                              CK_ULONG ulEncryptedDataLen, CK_BYTE_PTR pData,
                              CK_ULONG_PTR pulDataLen);
typedef CK_RV (*CK_C_DecryptUpdate)(K2P_H hSession, CK_BYTE_PTR pEncryptedPart,
                                    CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart,
                                    CK_ULONG_PTR pulPartLen);
typedef CK_RV (*CK_C_DecryptFinal)(K2P_H hSession, CK_BYTE_PTR pLastPart,
                                   CK_ULONG_PTR pulLastPartLen);
typedef CK_RV (*CK_C_DigestInit)(K2P_H hSession, CK_MECHANISM_PTR pMechanism);
typedef CK_RV (*CK_C_Digest)(K2P_H hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                             CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen);
typedef CK_RV (*CK_C_DigestUpdate)(K2P_H hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen);
typedef CK_RV (*CK_C_DigestKey)(K2P_H hSession, K2P_O hKey);
typedef CK_RV (*CK_C_DigestFinal)(K2P_H hSession, CK_BYTE_PTR pDigest,
                                  CK_ULONG_PTR pulDigestLen);
typedef CK_RV (*CK_C_SignInit)(K2P_H hSession, CK_MECHANISM_PTR pMechanism, K2P_O hKey);
typedef CK_RV (*CK_C_Sign)(K2P_H hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                           CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen);
typedef CK_RV (*CK_C_SignUpdate)(K2P_H hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen);
typedef CK_RV (*CK_C_SignFinal)(K2P_H hSession, CK_BYTE_PTR pSignature,
                                CK_ULONG_PTR pulSignatureLen);
typedef CK_RV (*CK_C_SignRecoverInit)(K2P_H hSession, CK_MECHANISM_PTR pMechanism, K2P_O hKey);
typedef CK_RV (*CK_C_SignRecover)(K2P_H hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                                  CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen);
typedef CK_RV (*CK_C_VerifyInit)(K2P_H hSession, CK_MECHANISM_PTR pMechanism, K2P_O hKey);
typedef CK_RV (*CK_C_Verify)(K2P_H hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                             CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen);
typedef CK_RV (*CK_C_VerifyUpdate)(K2P_H hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen);
typedef CK_RV (*CK_C_VerifyFinal)(K2P_H hSession, CK_BYTE_PTR pSignature,
                                  CK_ULONG ulSignatureLen);
typedef CK_RV (*CK_C_VerifyRecoverInit)(K2P_H hSession, CK_MECHANISM_PTR pMechanism,
                                        K2P_O hKey);
typedef CK_RV (*CK_C_VerifyRecover)(K2P_H hSession, CK_BYTE_PTR pSignature,
                                    CK_ULONG ulSignatureLen, CK_BYTE_PTR pData,
                                    CK_ULONG_PTR pulDataLen);
/* dual-function */
typedef CK_RV (*CK_C_DigestEncryptUpdate)(K2P_H hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                                          CK_BYTE_PTR pEncryptedPart,
                                          CK_ULONG_PTR pulEncryptedPartLen);
typedef CK_RV (*CK_C_DecryptDigestUpdate)(K2P_H hSession, CK_BYTE_PTR pEncryptedPart,
                                          CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart,
                                          CK_ULONG_PTR pulPartLen);
typedef CK_RV (*CK_C_SignEncryptUpdate)(K2P_H hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                                        CK_BYTE_PTR pEncryptedPart,
                                        CK_ULONG_PTR pulEncryptedPartLen);
typedef CK_RV (*CK_C_DecryptVerifyUpdate)(K2P_H hSession, CK_BYTE_PTR pEncryptedPart,
                                          CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart,
                                          CK_ULONG_PTR pulPartLen);
/* key management */
typedef CK_RV (*CK_C_GenerateKey)(K2P_H hSession, CK_MECHANISM_PTR pMechanism,
                                  CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                                  CK_OBJECT_HANDLE_PTR phKey);
typedef CK_RV (*CK_C_GenerateKeyPair)(K2P_H hSession, CK_MECHANISM_PTR pMechanism,
                                      CK_ATTRIBUTE_PTR pPublicKeyTemplate,
                                      CK_ULONG ulPublicKeyAttributeCount,
                                      CK_ATTRIBUTE_PTR pPrivateKeyTemplate,
                                      CK_ULONG ulPrivateKeyAttributeCount,
                                      CK_OBJECT_HANDLE_PTR phPublicKey,
                                      CK_OBJECT_HANDLE_PTR phPrivateKey);
typedef CK_RV (*CK_C_WrapKey)(K2P_H hSession, CK_MECHANISM_PTR pMechanism, K2P_O hWrappingKey,
                              K2P_O hKey, CK_BYTE_PTR pWrappedKey, CK_ULONG_PTR pulWrappedKeyLen);
typedef CK_RV (*CK_C_UnwrapKey)(K2P_H hSession, CK_MECHANISM_PTR pMechanism,
                                K2P_O hUnwrappingKey, CK_BYTE_PTR pWrappedKey,
                                CK_ULONG ulWrappedKeyLen, CK_ATTRIBUTE_PTR pTemplate,
                                CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey);
typedef CK_RV (*CK_C_DeriveKey)(K2P_H hSession, CK_MECHANISM_PTR pMechanism, K2P_O hBaseKey,
                                CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount,
                                CK_OBJECT_HANDLE_PTR phKey);
/* random numbers */
typedef CK_RV (*CK_C_SeedRandom)(K2P_H hSession, CK_BYTE_PTR pSeed, CK_ULONG ulSeedLen);
typedef CK_RV (*CK_C_GenerateRandom)(K2P_H hSession, CK_BYTE_PTR RandomData,
                                     CK_ULONG ulRandomLen);
/* legacy parallel functions, and slot events */
typedef CK_RV (*CK_C_GetFunctionStatus)(K2P_H hSession);
typedef CK_RV (*CK_C_CancelFunction)(K2P_H hSession);
typedef CK_RV (*CK_C_WaitForSlotEvent)(CK_FLAGS flags, CK_SLOT_ID_PTR pSlot,
                                       CK_VOID_PTR pReserved);
/* 3.0: interfaces, user names, cancellation */
typedef CK_RV (*CK_C_GetInterfaceList)(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount);
typedef CK_RV (*CK_C_GetInterface)(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
                                   CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags);
typedef CK_RV (*CK_C_LoginUser)(K2P_H hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin,
                                CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pUsername,
                                CK_ULONG ulUsernameLen);
typedef CK_RV (*CK_C_SessionCancel)(K2P_H hSession, CK_FLAGS flags);
/* 3.0: message-based encryption, decryption, signing, verifying */
typedef CK_RV (*CK_C_MessageEncryptInit)(K2P_H hSession, CK_MECHANISM_PTR pMechanism,
                                         K2P_O hKey);
typedef CK_RV (*CK_C_EncryptMessage)(K2P_H hSession, CK_VOID_PTR pParameter,
                                     CK_ULONG ulParameterLen, CK_BYTE_PTR pAssociatedData,
                                     CK_ULONG ulAssociatedDataLen, CK_BYTE_PTR pPlaintext,
                                     CK_ULONG ulPlaintextLen, CK_BYTE_PTR pCiphertext,
                                     CK_ULONG_PTR pulCiphertextLen);
typedef CK_RV (*CK_C_EncryptMessageBegin)(K2P_H hSession, CK_VOID_PTR pParameter,
                                          CK_ULONG ulParameterLen, CK_BYTE_PTR pAssociatedData,
                                          CK_ULONG ulAssociatedDataLen);
typedef CK_RV (*CK_C_EncryptMessageNext)(K2P_H hSession, CK_VOID_PTR pParameter,
                                         CK_ULONG ulParameterLen, CK_BYTE_PTR pPlaintextPart,
                                         CK_ULONG ulPlaintextPartLen,
                                         CK_BYTE_PTR pCiphertextPart,
                                         CK_ULONG_PTR pulCiphertextPartLen, CK_FLAGS flags);
typedef CK_RV (*CK_C_MessageEncryptFinal)(K2P_H hSession);
typedef CK_RV (*CK_C_MessageDecryptInit)(K2P_H hSession, CK_MECHANISM_PTR pMechanism,
                                         K2P_O hKey);
typedef CK_RV (*CK_C_DecryptMessage)(K2P_H hSession, CK_VOID_PTR pParameter,
                                     CK_ULONG ulParameterLen, CK_BYTE_PTR pAssociatedData,
                                     CK_ULONG ulAssociatedDataLen, CK_BYTE_PTR pCiphertext,
                                     CK_ULONG ulCiphertextLen, CK_BYTE_PTR pPlaintext,
                                     CK_ULONG_PTR pulPlaintextLen);
typedef CK_RV (*CK_C_DecryptMessageBegin)(K2P_H hSession, CK_VOID_PTR pParameter,
                                          CK_ULONG ulParameterLen, CK_BYTE_PTR pAssociatedData,
                                          CK_ULONG ulAssociatedDataLen);
typedef CK_RV (*CK_C_DecryptMessageNext)(K2P_H hSession, CK_VOID_PTR pParameter,
                                         CK_ULONG ulParameterLen, CK_BYTE_PTR pCiphertextPart,
                                         CK_ULONG ulCiphertextPartLen,
                                         CK_BYTE_PTR pPlaintextPart,
                                         CK_ULONG_PTR pulPlaintextPartLen, CK_FLAGS flags);
typedef CK_RV (*CK_C_MessageDecryptFinal)(K2P_H hSession);
typedef CK_RV (*CK_C_MessageSignInit)(K2P_H hSession, CK_MECHANISM_PTR pMechanism, K2P_O hKey);
typedef CK_RV (*CK_C_SignMessage)(K2P_H hSession, CK_VOID_PTR pParameter,
                                  CK_ULONG ulParameterLen, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                                  CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen);
typedef CK_RV (*CK_C_SignMessageBegin)(K2P_H hSession, CK_VOID_PTR pParameter,
                                       CK_ULONG ulParameterLen);
typedef CK_RV (*CK_C_SignMessageNext)(K2P_H hSession, CK_VOID_PTR pParameter,
                                      CK_ULONG ulParameterLen, CK_BYTE_PTR pData,
                                      CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                                      CK_ULONG_PTR pulSignatureLen);
typedef CK_RV (*CK_C_MessageSignFinal)(K2P_H hSession);
typedef CK_RV (*CK_C_MessageVerifyInit)(K2P_H hSession, CK_MECHANISM_PTR pMechanism,
                                        K2P_O hKey);
typedef CK_RV (*CK_C_VerifyMessage)(K2P_H hSession, CK_VOID_PTR pParameter,
                                    CK_ULONG ulParameterLen, CK_BYTE_PTR pData,
                                    CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                                    CK_ULONG ulSignatureLen);
typedef CK_RV (*CK_C_VerifyMessageBegin)(K2P_H hSession, CK_VOID_PTR pParameter,
                                         CK_ULONG ulParameterLen);
typedef CK_RV (*CK_C_VerifyMessageNext)(K2P_H hSession, CK_VOID_PTR pParameter,
                                        CK_ULONG ulParameterLen, CK_BYTE_PTR pData,
                                        CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                                        CK_ULONG ulSignatureLen);
typedef CK_RV (*CK_C_MessageVerifyFinal)(K2P_H hSession);

#undef K2P_H
#undef K2P_O

/*
 * The function lists.  Member order is the ABI, fixed by the specification: the 2.40 list
 * has its version and 68 functions; the 3.0 list repeats them in the same order and appends
 * 24 (interfaces, C_LoginUser, C_SessionCancel, the message-based functions).
 */
#define CK_FUNCTIONS_2_40(X) \
	X(Initialize) X(Finalize) X(GetInfo) X(GetFunctionList) \
	X(GetSlotList) X(GetSlotInfo) X(GetTokenInfo) X(GetMechanismList) X(GetMechanismInfo) \
	X(InitToken) X(InitPIN) X(SetPIN) \
	X(OpenSession) X(CloseSession) X(CloseAllSessions) X(GetSessionInfo) \
	X(GetOperationState) X(SetOperationState) X(Login) X(Logout) \
	X(CreateObject) X(CopyObject) X(DestroyObject) X(GetObjectSize) \
	X(GetAttributeValue) X(SetAttributeValue) \
	X(FindObjectsInit) X(FindObjects) X(FindObjectsFinal) \
	X(EncryptInit) X(Encrypt) X(EncryptUpdate) X(EncryptFinal) \
	X(DecryptInit) X(Decrypt) X(DecryptUpdate) X(DecryptFinal) \
	X(DigestInit) X(Digest) X(DigestUpdate) X(DigestKey) X(DigestFinal) \
	X(SignInit) X(Sign) X(SignUpdate) X(SignFinal) X(SignRecoverInit) X(SignRecover) \
	X(VerifyInit) X(Verify) X(VerifyUpdate) X(VerifyFinal) \
	X(VerifyRecoverInit) X(VerifyRecover) \
	X(DigestEncryptUpdate) X(DecryptDigestUpdate) X(SignEncryptUpdate) \
	X(DecryptVerifyUpdate) \
	X(GenerateKey) X(GenerateKeyPair) X(WrapKey) X(UnwrapKey) X(DeriveKey) \
	X(SeedRandom) X(GenerateRandom) \
	X(GetFunctionStatus) X(CancelFunction) X(WaitForSlotEvent)

#define CK_FUNCTIONS_3_0_ADDED(X) \
	X(GetInterfaceList) X(GetInterface) X(LoginUser) X(SessionCancel) \
	X(MessageEncryptInit) X(EncryptMessage) X(EncryptMessageBegin) X(EncryptMessageNext) \
	X(MessageEncryptFinal) \
	X(MessageDecryptInit) X(DecryptMessage) X(DecryptMessageBegin) X(DecryptMessageNext) \
	X(MessageDecryptFinal) \
	X(MessageSignInit) X(SignMessage) X(SignMessageBegin) X(SignMessageNext) \
	X(MessageSignFinal) \
	X(MessageVerifyInit) X(VerifyMessage) X(VerifyMessageBegin) X(VerifyMessageNext) \
	X(MessageVerifyFinal)

#define CK_FUNCTION_LIST_MEMBER_(name) CK_C_##name C_##name;

struct CK_FUNCTION_LIST {
	CK_VERSION version;
	CK_FUNCTIONS_2_40(CK_FUNCTION_LIST_MEMBER_)
};

struct CK_FUNCTION_LIST_3_0 {
	CK_VERSION version;
	CK_FUNCTIONS_2_40(CK_FUNCTION_LIST_MEMBER_)
	CK_FUNCTIONS_3_0_ADDED(CK_FUNCTION_LIST_MEMBER_)
};

#ifdef __cplusplus
}
#endif

#endif /* K2P_PKCS11_H */
