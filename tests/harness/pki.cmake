# ctest fixture "pki": the dev PKI (deploy/pki.sh) in ${ALMA_TEST_PKI_DIR}, which tests read through
# testenv_pki("<name>.pem"). deploy/pki.sh keeps valid files and only regenerates what is missing or expiring,
# so this setup is cheap after the first run. There is no cleanup test on purpose: the certificates are
# reused by the next run (they live in the build tree and are never committed).
add_test(NAME harness.pki
         COMMAND bash ${CMAKE_SOURCE_DIR}/deploy/pki.sh ${ALMA_TEST_PKI_DIR}
                 --trust-domain alma.local --namespace alma)
set_tests_properties(harness.pki PROPERTIES FIXTURES_SETUP pki TIMEOUT 120 LABELS harness)
